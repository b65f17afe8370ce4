package faulttest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestFaultProduceErrors: produce requests to the output topic fail with retriable errors
// (NOT_LEADER_FOR_PARTITION, then REQUEST_TIMED_OUT) for a while; the idempotent producer
// retries, every source event completes only after its record is delivered, and the output
// holds every input value.
func TestFaultProduceErrors(t *testing.T) {
	const n, parts = produceFaultRecords, produceFaultPartitions
	cl, want := produceFaultCluster(t, produceFault(kerr.NotLeaderForPartition, 5), produceFault(kerr.RequestTimedOut, 5))
	p, prod := copyPipeline(t, cl.Addr(), "g")
	runUntil(t, p, "all delivered and completed", func() bool { return p.Stats().Completed == n })
	if ps := prod.Stats(); ps.DeliveryErrors != 0 {
		t.Fatalf("delivery errors %d: librdkafka should have retried the retriable faults", ps.DeliveryErrors)
	}
	checkAll(t, outValues(t, cl.Addr(), want), want, cl.Addr(), "g", "in", parts)
}

// TestFaultProduceErrorsThenFatal: retriable produce errors, then one librdkafka's idempotent
// producer treats as fatal (OUT_OF_ORDER_SEQUENCE_NUMBER). The producer can deliver nothing
// more, so the pipeline stops with that error even though its error policy would skip
// failures (the default handler): no offset is committed past a record that was not written.
// A restart with a new producer delivers the rest: every input value reaches the output.
func TestFaultProduceErrorsThenFatal(t *testing.T) {
	const n, parts = produceFaultRecords, produceFaultPartitions
	cl, want := produceFaultCluster(t, produceFault(kerr.NotLeaderForPartition, 3), produceFault(kerr.RequestTimedOut, 3),
		produceFault(fatalProduceErr, 1))
	p, _ := copyPipeline(t, cl.Addr(), "g")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // a pipeline that skips the failures never stops by itself
	defer cancel()
	err := p.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "fatal") {
		t.Fatalf("Run = %v, want the fatal producer error", err)
	}
	t.Logf("first run stopped: %v", err)
	// Nothing committed past an unwritten record.
	out := outValues(t, cl.Addr(), nil)
	committed, cerr := kafkatest.Committed(cl.Addr(), "g", "in", parts)
	if cerr != nil {
		t.Fatal(cerr)
	}
	in, rerr := kafkatest.ReadMessages(cl.Addr(), "in", n, 30*time.Second)
	if rerr != nil {
		t.Fatal(rerr)
	}
	for _, m := range in {
		if int64(m.TopicPartition.Offset) < committed[m.TopicPartition.Partition] && out.m[string(m.Value)] == 0 {
			t.Fatalf("%s committed (partition %d committed %d) but never written", m.Value, m.TopicPartition.Partition, committed[m.TopicPartition.Partition])
		}
	}
	// Restart: a new pipeline and producer finish the rest.
	p2, _ := copyPipeline(t, cl.Addr(), "g")
	runUntil(t, p2, "commits to reach the end", func() bool { return committedSum(t, cl.Addr(), "g", "in", parts) == n })
	checkAll(t, outValues(t, cl.Addr(), want), want, cl.Addr(), "g", "in", parts)
}

// fatalProduceErr is a produce error that librdkafka's idempotent producer raises as fatal
// ("sequence desynchronization"); CLUSTER_AUTHORIZATION_FAILED, PRODUCER_FENCED and
// INVALID_PRODUCER_EPOCH are not (probed against librdkafka 2.11.1).
var fatalProduceErr = kerr.OutOfOrderSequenceNumber

const produceFaultRecords, produceFaultPartitions = 1000, 2

// produceFaultCluster starts a broker with topics "in" and "out", fills "in" and injects the
// faults; it returns the cluster and the values of "in".
func produceFaultCluster(t *testing.T, faults ...kfake.Fault) (*kafkatest.Cluster, map[string]bool) {
	t.Helper()
	cl := kafkatest.StartT(t, kafkatest.Topic("in", produceFaultPartitions), kafkatest.Topic("out", produceFaultPartitions))
	want := produce(t, cl.Addr(), "in", "v", produceFaultRecords)
	cl.Kfake().Fault(faults...)
	return cl, want
}

// produceFault fails count produce requests to "out" with err.
func produceFault(err *kerr.Error, count int) kfake.Fault {
	return kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "out", Err: err, Count: count}
}

// runUntil runs p until cond holds (60 s at most), then stops it; Run must return nil.
func runUntil(t *testing.T, p *pipeline.Pipeline, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	kafkatest.WaitFor(t, 60*time.Second, what, cond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// copyPipeline is source "in" (group) → copy → idempotent producer to "out", with the default
// error handler (log and skip).
func copyPipeline(t *testing.T, addr, group string) (*pipeline.Pipeline, *kafka.Producer) {
	t.Helper()
	src, err := kafka.NewSource(kafka.Config{Brokers: addr, GroupID: group, Topics: []string{"in"}, Overrides: kafkatest.FastGroup(),
		CommitInterval: 100 * time.Millisecond, Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) }) // before the broker's cleanup, registered earlier
	b := pipeline.New(src, append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()))...)
	recs := pipeline.Then(b.Source(), stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		return kafka.Record{Key: append([]byte(nil), ev.Key...), Value: append([]byte(nil), ev.Value...)}, nil
	}))
	pipeline.To(recs, prod.Sink("produce", stage.WithConcurrency(4)))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return p, prod
}

// outValues reads the output topic until every wanted value was seen, or (want nil) up to its
// high watermarks as they are now; 30 s at most. Duplicates are counted, not mistaken for
// progress.
func outValues(t *testing.T, addr string, want map[string]bool) *seen {
	t.Helper()
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": addr, "group.id": fmt.Sprintf("reader-%d", time.Now().UnixNano()),
		"auto.offset.reset": "earliest", "enable.auto.commit": false, "log_level": 3, "fetch.wait.max.ms": 50})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	remaining := map[int32]int64{} // partition → high watermark not yet reached (want nil)
	if want == nil {
		for p := range int32(produceFaultPartitions) {
			_, high, err := c.QueryWatermarkOffsets("out", p, 10000)
			if err != nil {
				t.Fatal(err)
			}
			if high > 0 {
				remaining[p] = high
			}
		}
	}
	if err := c.Subscribe("out", nil); err != nil {
		t.Fatal(err)
	}
	s := newSeen()
	more := func() bool {
		if want == nil {
			return len(remaining) > 0
		}
		return len(s.missing(want)) > 0
	}
	for end := time.Now().Add(30 * time.Second); more() && time.Now().Before(end); {
		if m, ok := c.Poll(100).(*ckafka.Message); ok && m.TopicPartition.Error == nil {
			s.add(string(m.Value))
			if high, ok := remaining[m.TopicPartition.Partition]; ok && int64(m.TopicPartition.Offset)+1 >= high {
				delete(remaining, m.TopicPartition.Partition)
			}
		}
	}
	if want == nil && len(remaining) > 0 { // (missing wanted values are checkAll's to report)
		t.Fatalf("reading %q: %d partitions short of their high watermark after 30 s", "out", len(remaining))
	}
	return s
}
