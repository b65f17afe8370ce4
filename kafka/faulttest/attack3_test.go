package faulttest

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Attack round 3: hostile conditions against the public API, real librdkafka over TCP.

// TestFaultAttack3StuckKeyReplayWindow: under OrderKey (37 keys), the record "a-0" blocks its
// call; the rest of its partition keeps finishing until the span bound (MaxInFlightPerPartition
// 64) pauses the partition. Then Run stops hard (drain timeout 0: the stuck call gets a
// cancelled context). A second consumer of the group processes again at most
// MaxInFlightPerPartition records of what the first finished (plus what finished since the last
// commit on the other partition, which the final commit covers), and then everything, with
// the commits at the end.
func TestFaultAttack3StuckKeyReplayWindow(t *testing.T) {
	const n, parts, span = 1000, 2, 64
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "a", n)
	first := newSeen()
	stuck := make(chan struct{})
	cfg := func(c *kafka.Config) { c.MaxInFlightPerPartition, c.Ordering = span, kafka.OrderKey }
	r := start(t, cl.Addr(), first, runOpts{group: "g", topic: "in", conc: 16, cfg: cfg,
		pipe: []pipeline.Option{pipeline.WithDrainTimeout(0), pipeline.WithCloseTimeout(3 * time.Second)},
		work: func(ctx context.Context, ev *stage.Event) error {
			if string(ev.Value) == "a-0" {
				close(stuck)
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}})
	<-stuck
	// The other partition runs to its end; the stuck one reads at most span records from a-0.
	kafkatest.WaitFor(t, 60*time.Second, "the stuck partition paused at its span bound, the other done", func() bool {
		return r.src.Stats().Paused == 1 && r.p.Stats().Completed+1 == r.p.Stats().Emitted && first.distinct() >= n/2-span
	})
	st := r.p.Stats()
	done1 := first.distinct()
	if err := r.wait(t); err != nil {
		t.Logf("first run: %v", err)
	}
	if first.distinct() != done1 {
		t.Fatalf("processed %d → %d after the pipeline was blocked", done1, first.distinct())
	}
	rest := map[string]bool{} // first has stopped: read without its lock
	for v := range want {
		if first.m[v] == 0 {
			rest[v] = true
		}
	}
	second := newSeen()
	r2 := start(t, cl.Addr(), second, runOpts{group: "g", topic: "in", conc: 16, cfg: cfg})
	kafkatest.WaitFor(t, 60*time.Second, "the rest processed", func() bool { return len(second.missing(rest)) == 0 })
	again := second.distinct() - len(rest)
	t.Logf("first run processed %d of %d (emitted %d); the second processed %d, %d of them again", done1, n, st.Emitted, second.distinct(), again)
	if again > span {
		t.Fatalf("%d records processed again after a hard stop, over MaxInFlightPerPartition %d", again, span)
	}
	kafkatest.WaitFor(t, 30*time.Second, "commits to reach the end", func() bool {
		return committedSum(t, cl.Addr(), "g", "in", parts) == n
	})
	if err := r2.wait(t); err != nil {
		t.Fatal(err)
	}
}
