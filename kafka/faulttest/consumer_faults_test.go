package faulttest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/stage"
)

// TestFaultCancelMidStream: cancelling Run mid-stream drains what is in flight, commits it and
// returns nil; a second consumer of the group gets exactly the rest (no gap), duplicates at most
// the in-flight window.
func TestFaultCancelMidStream(t *testing.T) {
	const n, parts = 3000, 4
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	// OrderNone emits each partition in offset order, so what completed is contiguous and the
	// final commit covers all of it. (Under OrderKey a message held for its busy key may be
	// passed by later keys; a stop then leaves those above it uncommitted: at-least-once
	// duplicates, bounded by the held window.)
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 4, cfg: func(c *kafka.Config) { c.Ordering = kafka.OrderNone }, work: slowWork})
	kafkatest.WaitFor(t, 30*time.Second, "a third processed", func() bool { return s.distinct() >= n/3 })
	if err := r.wait(t); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	st := r.p.Stats()
	if st.InFlightEvents != 0 || st.InFlightBytes != 0 || st.Failed != 0 {
		t.Fatalf("not drained: %+v", st)
	}
	if got := committedSum(t, cl.Addr(), "g", "in", parts); got != int64(st.Completed) {
		t.Fatalf("final commit %d, want every completed event (%d)", got, st.Completed)
	}
	r2 := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 4})
	kafkatest.WaitFor(t, 30*time.Second, "the rest processed", func() bool { return s.distinct() == n })
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	if err := r2.wait(t); err != nil {
		t.Fatal(err)
	}
	if d := s.dups(); d != 0 {
		t.Fatalf("%d duplicates after a clean drain and commit", d)
	}
}

// TestFaultStageSlowerThanMaxPollInterval: a stage blocks longer than max.poll.interval.ms;
// the source keeps polling (its partitions paused), so the member is not kicked out: one
// assignment, no revoke, nothing lost.
func TestFaultStageSlowerThanMaxPollInterval(t *testing.T) {
	const n, parts = 200, 2
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	release := make(chan struct{})
	var blocked atomic.Bool
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 1,
		cfg: func(c *kafka.Config) { c.Overrides["max.poll.interval.ms"] = 7000 },
		work: func(ctx context.Context, _ *stage.Event) error {
			if blocked.CompareAndSwap(false, true) {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		}})
	kafkatest.WaitFor(t, 20*time.Second, "the stage to block", blocked.Load)
	time.Sleep(9 * time.Second) // the fault itself: longer than max.poll.interval.ms (7 s)
	close(release)
	kafkatest.WaitFor(t, 30*time.Second, "all processed", func() bool { return s.distinct() == n })
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	if st := r.src.Stats(); st.Rebalances > 2 || st.LateCompletions > 0 {
		t.Fatalf("member was kicked out (rebalances %d, late %d)", st.Rebalances, st.LateCompletions)
	}
}
