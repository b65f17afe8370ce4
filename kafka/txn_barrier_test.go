package kafka_test

import (
	"fmt"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/stage"
)

// TestExactlyOnceBarrierLeavesPrefetch: during a barrier the source does not take the records
// that arrive above its partition's mark out of librdkafka (it could only hold them, and
// holding more than a partition's share pauses it, which discards librdkafka's prefetch and
// refetches it after the resume): it polls at most once per 50 ms (barrierPoll) until the
// transaction commits, so the partition is never paused. Then every input is output exactly
// once.
func TestExactlyOnceBarrierLeavesPrefetch(t *testing.T) {
	const first, more = 10, 600 // more: over 256 (the held messages that pause a partition)
	const barrierPoll = 50 * time.Millisecond
	cl := startCluster(t, kafkatest.Topic("in", 1), kafkatest.Topic("out", 1), kafkatest.Topic("dlq", 1))
	keys := make([]string, first+more)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	produceLayout(t, cl.Addr(), "in", 0, keys[:first])
	release := make(chan struct{})
	work := func(ev *stage.Event) {
		if ev.Offset == 0 {
			<-release // the barrier cannot commit while offset 0 is in flight
		}
	}
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	src := newSource(t, eosConfig(cl.Addr(), "g-prefetch", "tx-prefetch"))
	r := startEOS(t, src, "a", work)
	kafkatest.WaitFor(t, 30*time.Second, "a barrier started with offset 0 in flight", func() bool {
		return kafka.TxnBarriers(r.src) > 0
	})
	produceLayoutFrom(t, cl.Addr(), "in", 0, keys, first) // all above the barrier's mark
	topic := "in"
	position := func() int64 {
		pos, err := r.src.Consumer().Position([]ckafka.TopicPartition{{Topic: &topic, Partition: 0}})
		if err != nil || len(pos) != 1 || pos[0].Offset < 0 {
			return -1
		}
		return int64(pos[0].Offset)
	}
	kafkatest.WaitFor(t, 30*time.Second, "a record above the mark polled", func() bool { return position() > first })
	p0, t0 := position(), time.Now()
	kafkatest.WaitFor(t, 30*time.Second, "10 more records polled, or the partition paused", func() bool {
		return position() >= p0+10 || r.src.Stats().Pauses > 0
	})
	p1, elapsed := position(), time.Since(t0)
	if n := r.src.Stats().Pauses; n != 0 {
		t.Fatalf("the partition was paused %d time(s) during the barrier (position %d → %d in %v): the source took librdkafka's prefetch only to hold it", n, p0, p1, elapsed)
	}
	if most := int64(elapsed/barrierPoll) + 1; p1-p0 > most {
		t.Fatalf("during the barrier the source polled %d records in %v, want at most %d (one per %v)", p1-p0, elapsed, most, barrierPoll)
	}
	close(release)
	waitCommitted(t, cl.Addr(), "g-prefetch", 1, first+more)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if n := r.src.Stats().Pauses; n != 0 {
		t.Fatalf("%d pause(s) by the end, want none", n)
	}
	want := map[string]bool{}
	for i := range keys {
		want[fmt.Sprintf("p0-%d", i)] = true
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
}
