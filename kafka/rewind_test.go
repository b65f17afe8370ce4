package kafka_test

import (
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
)

// TestFaultOffsetsRewoundAboveUnfinished: the partition's offsets move back while it is
// assigned, but not below its oldest unfinished offset: offset 0 ("slow") is in flight and
// blocked, the later "slow" records are held behind it (OrderKey), everything else finished;
// then the consumer delivers offsets from 50 again (here a Seek; in the chaos soak librdkafka
// delivered the last offset again after an incremental assignment). The held records below 50
// are still in the log and never delivered again: starting a new sequence at 50 dropped them
// and committed past them (177 records never processed in a 5-minute soak). Now the source
// goes back to the oldest unfinished offset: every record is processed and the commit reaches
// the end.
func TestFaultOffsetsRewoundAboveUnfinished(t *testing.T) {
	const n = 100
	cl := startCluster(t, kafkatest.Topic("in", 1))
	produceLayout(t, cl.Addr(), "in", 0, layout(n, 10)) // "slow" at 0, 10, ..., 90
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	var seen offsets
	r := start(t, newSource(t, sourceConfig(cl.Addr(), "g-rewind", "in")), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seen, release)) })
	kafkatest.WaitFor(t, 60*time.Second, "every record but the slow key's processed", func() bool { return seen.count(0) == n-n/10 })
	topic := "in"
	if _, err := r.src.Consumer().SeekPartitions([]ckafka.TopicPartition{{Topic: &topic, Partition: 0, Offset: 50}}); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitFor(t, 60*time.Second, "the rewind seen", func() bool { return r.src.Stats().Rewinds > 0 })
	close(release)
	kafkatest.WaitFor(t, 60*time.Second, "the offset committed to the end", func() bool {
		return committed(t, cl.Addr(), "g-rewind", "in", 1)[0] == n
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	for off := range int64(n) {
		if !seen.has(0, off) {
			t.Fatalf("offset %d never processed (%d records processed)", off, seen.count(0))
		}
	}
}
