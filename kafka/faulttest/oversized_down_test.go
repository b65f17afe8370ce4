package faulttest

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestFaultOversizedDeadLetterDown: a record larger than the in-flight budget goes to its
// error handler, a dead-letter topic that refuses every produce for longer than
// max.poll.interval.ms. The handler runs on the pipeline's error-handling goroutine, not on
// the polling one: the records after it are processed meanwhile, the member stays in the group
// (no revoke, no new assignment), and the commit does not pass the oversized record. Once the
// dead-letter topic is back the record lands there and the commits reach the end.
func TestFaultOversizedDeadLetterDown(t *testing.T) {
	const maxPoll = 6 * time.Second // librdkafka: >= session.timeout.ms (FastGroup: 6 s)
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1), kafkatest.Topic("dlq", 1))
	want := produce(t, cl.Addr(), "in", "a", 50)
	big := produceBig(t, cl.Addr(), "in", 900<<10) // offset 50
	for v := range produce(t, cl.Addr(), "in", "b", 50) {
		want[v] = true
	}
	down := refuseProduce(cl, "dlq")
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 1 << 20,
		Overrides: map[string]any{"message.timeout.ms": 1000}})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	dlq := prod.DeadLetter("dlq")
	var first atomic.Int64 // unix nanos of the handler's first call
	s := newSeen()
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in",
		cfg: func(c *kafka.Config) {
			// In flight gets Budget/2 = 512 KiB: the 900 KiB record cannot be admitted.
			c.Budget, c.MaxMessageBytes = 1<<20, 256<<10
			c.Overrides["max.poll.interval.ms"] = int(maxPoll / time.Millisecond)
		},
		handler: func(ctx context.Context, f *stage.Failure) error {
			if !errors.Is(f.Err, pipeline.ErrTooLarge) {
				t.Errorf("handler got %v, want ErrTooLarge", f)
			}
			first.CompareAndSwap(0, time.Now().UnixNano())
			return dlq(ctx, f)
		}})
	kafkatest.WaitFor(t, 30*time.Second, "the records around the oversized one processed while its dead-letter topic is down",
		func() bool { return s.distinct() == 100 })
	kafkatest.WaitFor(t, 30*time.Second, "the error handler called", func() bool { return first.Load() != 0 })
	rebalances := r.src.Stats().Rebalances
	// Hold the dead-letter topic down until max.poll.interval.ms has passed twice since the
	// handler began: had it blocked Poll, librdkafka would have left the group by then.
	for time.Since(time.Unix(0, first.Load())) < 2*maxPoll {
		if st := r.src.Stats(); st.Rebalances != rebalances || st.Assigned != 1 {
			t.Fatalf("the member was evicted while the dead-letter topic was down: rebalances %d → %d, assigned %d", rebalances, st.Rebalances, st.Assigned)
		}
		if c := committedSum(t, cl.Addr(), "g", "in", 1); c > 50 {
			t.Fatalf("committed %d past the oversized record (offset 50) before it was dead-lettered", c)
		}
		time.Sleep(100 * time.Millisecond) // sampling a condition that must hold throughout
	}
	if down.Hits() == 0 {
		t.Fatal("the dead-letter topic was never tried")
	}
	down.Remove()
	s.add(string(big)) // it goes to the dead-letter topic now: the commit must pass it
	want[string(big)] = true
	checkAll(t, s, want, cl.Addr(), "g", "in", 1)
	if st := r.src.Stats(); st.Rebalances != rebalances {
		t.Fatalf("rebalances %d → %d: the member was evicted", rebalances, st.Rebalances)
	}
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	if n := prod.Stats().DeadLetters; n != 1 {
		t.Fatalf("dead letters %d, want 1", n)
	}
}
