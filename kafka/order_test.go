package kafka_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestOutOfOrderCompletionCommitsContiguous: events finish out of order (unordered stage,
// concurrency 8, random delays) and one offset is held back: the committed offset stops at
// it while everything after it finished, and reaches the end once it is released.
func TestOutOfOrderCompletionCommitsContiguous(t *testing.T) {
	const n, heldOff = 200, 50
	cl := startCluster(t, kafkatest.Topic("in", 1))
	want := produceN(t, cl.Addr(), "in", "v", n, 10)
	cfg := sourceConfig(cl.Addr(), "g-ooo", "in")
	cfg.Ordering = kafka.OrderNone
	src := newSource(t, cfg)
	release := make(chan struct{})
	var got seen
	r := start(t, src, func(b *pipeline.Builder) {
		work := pipeline.Then(b.Source(), stage.Map("work", func(ctx context.Context, ev *stage.Event) (*stage.Event, error) {
			if ev.Offset == heldOff {
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			} else {
				time.Sleep(time.Duration(ev.Offset*7919%5) * time.Millisecond)
			}
			return ev, nil
		}, stage.WithConcurrency(8), stage.WithUnordered()))
		pipeline.To(work, got.sink("collect", nil))
	})
	kafkatest.WaitFor(t, 60*time.Second, "all but the held-back event to complete", func() bool { return r.p.Stats().Completed >= n-1 })
	kafkatest.WaitFor(t, 10*time.Second, "the commit to reach the held-back offset", func() bool {
		return committed(t, cl.Addr(), "g-ooo", "in", 1)[0] == heldOff
	})
	// Several commit intervals pass; the commit must never pass the unfinished offset.
	for range 5 {
		if c := committed(t, cl.Addr(), "g-ooo", "in", 1)[0]; c != heldOff {
			t.Fatalf("committed %d while offset %d is unfinished", c, heldOff)
		}
		time.Sleep(cfg.CommitInterval)
	}
	if s := r.p.Stats(); s.Completed != n-1 {
		t.Fatalf("completed %d, want %d", s.Completed, n-1)
	}
	close(release)
	kafkatest.WaitFor(t, 30*time.Second, "all events to complete", func() bool { return r.p.Stats().Completed == n })
	requireCommittedAtEnd(t, cl.Addr(), "g-ooo", "in", 1)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	requireSet(t, want, values(got.all()))
}

// TestKeyOrderUnderConcurrency: OrderKey with a 16-wide unordered stage: each key's values
// arrive in production order, while different keys run in parallel.
func TestKeyOrderUnderConcurrency(t *testing.T) {
	const n, keys = 1200, 24
	cl := startCluster(t, kafkatest.Topic("in", 4))
	produceN(t, cl.Addr(), "in", "v", n, keys)
	src := newSource(t, sourceConfig(cl.Addr(), "g-key", "in"))
	var conc maxTracker
	var mu sync.Mutex
	seqs := map[string][]int{}
	r := start(t, src, func(b *pipeline.Builder) {
		work := pipeline.Then(b.Source(), stage.Map("work", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
			conc.enter()
			defer conc.leave()
			time.Sleep(time.Duration(ev.Offset*7919%300) * time.Microsecond)
			return ev, nil
		}, stage.WithConcurrency(16), stage.WithUnordered()))
		pipeline.To(work, stage.Sink("collect", func(_ context.Context, ev *stage.Event) error {
			i, err := strconv.Atoi(strings.TrimPrefix(string(ev.Value), "v-"))
			if err != nil {
				return err
			}
			mu.Lock()
			seqs[string(ev.Key)] = append(seqs[string(ev.Key)], i)
			mu.Unlock()
			return nil
		}, stage.WithConcurrency(4)))
	})
	kafkatest.WaitFor(t, 60*time.Second, "all events", func() bool { return r.p.Stats().Completed >= n })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seqs) != keys {
		t.Fatalf("%d keys seen, want %d", len(seqs), keys)
	}
	for k, s := range seqs {
		if len(s) != n/keys {
			t.Fatalf("key %s: %d values, want %d", k, len(s), n/keys)
		}
		for i := 1; i < len(s); i++ {
			if s[i] <= s[i-1] {
				t.Fatalf("key %s out of order: %v", k, s)
			}
		}
	}
	if p := conc.peak(); p <= 1 {
		t.Fatalf("different keys never ran in parallel (peak concurrency %d)", p)
	}
	t.Logf("peak concurrency %d", conc.peak())
}

// TestOrderPartitionOneInFlight: OrderPartition never has two events of a partition in
// flight, even with an 8-wide unordered stage, and events of different partitions are in
// flight together (the mode serialises each partition, not the consumer).
func TestOrderPartitionOneInFlight(t *testing.T) {
	const n, parts = 400, 4
	cl := startCluster(t, kafkatest.Topic("in", parts))
	want := produceN(t, cl.Addr(), "in", "v", n, 40)
	cfg := sourceConfig(cl.Addr(), "g-part", "in")
	cfg.Ordering = kafka.OrderPartition
	src := newSource(t, cfg)
	var g partitionGauge
	var outOfOrder atomic.Int32
	var mu sync.Mutex
	last := map[int32]int64{}
	var got seen
	r := start(t, src, func(b *pipeline.Builder) {
		work := pipeline.Then(b.Source(), stage.Map("work", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
			g.enter(ev.Partition)
			// Long enough for the other partitions' events to reach the stage meanwhile.
			time.Sleep(2 * time.Millisecond)
			return ev, nil
		}, stage.WithConcurrency(8), stage.WithUnordered()))
		pipeline.To(work, got.sink("collect", func(ev *stage.Event) {
			mu.Lock()
			if l, ok := last[ev.Partition]; ok && ev.Offset <= l {
				outOfOrder.Add(1)
			}
			last[ev.Partition] = ev.Offset
			mu.Unlock()
			g.leave(ev.Partition) // the event completes when the sink returns
		}))
	})
	kafkatest.WaitFor(t, 60*time.Second, "all events", func() bool { return r.p.Stats().Completed >= n })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	perPartition, partitions := g.peaks()
	if perPartition != 1 {
		t.Fatalf("%d events of one partition in flight at once, want 1", perPartition)
	}
	if partitions < 2 {
		t.Fatalf("at most %d partition(s) had an event in flight at once: partitions did not run in parallel", partitions)
	}
	if v := outOfOrder.Load(); v != 0 {
		t.Fatalf("%d events reached the sink out of their partition's order", v)
	}
	requireSet(t, want, values(got.all()))
	t.Logf("peak partitions in flight together: %d of %d", partitions, parts)
}

// partitionGauge counts the events of each partition between a stage's entry and the sink's
// return, and keeps the peaks: events of one partition at once, and partitions at once.
type partitionGauge struct {
	mu                sync.Mutex
	cur               map[int32]int
	active            int // partitions with cur > 0
	maxPer, maxActive int
}

func (g *partitionGauge) enter(p int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur == nil {
		g.cur = map[int32]int{}
	}
	g.cur[p]++
	if g.cur[p] == 1 {
		g.active++
	}
	g.maxPer, g.maxActive = max(g.maxPer, g.cur[p]), max(g.maxActive, g.active)
}

func (g *partitionGauge) leave(p int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cur[p]--
	if g.cur[p] == 0 {
		g.active--
	}
}

// peaks returns the most events of one partition, and the most partitions, seen at once.
func (g *partitionGauge) peaks() (perPartition, partitions int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maxPer, g.maxActive
}
