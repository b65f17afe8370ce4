package pipeline_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Offset i has i%3 children (0, 1 or 2) after the FlatMap; the children are batched and the
// batches sunk. Every offset must complete exactly once, ok, and only after every sink call
// that handled one of its children has returned.
func TestFlatMapAndBatchCompleteEveryOffsetExactlyOnce(t *testing.T) {
	const n = 600
	children := func(off int64) int64 { return off % 3 }
	var (
		mu       sync.Mutex
		returned = map[int64]int64{} // children whose sink call has returned
		finished = map[int64]int{}   // completions, ok or not
	)
	src := sized(n, 4)
	src.OnComplete = func(ev *stage.Event, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		finished[ev.Offset]++
		if !ok || finished[ev.Offset] != 1 {
			t.Errorf("offset %d: completion %d, ok=%v", ev.Offset, finished[ev.Offset], ok)
		}
		if got, want := returned[ev.Offset], children(ev.Offset); got != want {
			t.Errorf("offset %d completed when %d of its %d children were sunk", ev.Offset, got, want)
		}
	}
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	nums := pipeline.Then(b.Source(), stage.Map("offset", offsetOf, stage.WithConcurrency(4)))
	kids := pipeline.Then(nums, stage.FlatMap("split", func(_ context.Context, v int64) ([]int64, error) {
		out := make([]int64, children(v))
		for i := range out {
			out[i] = v
		}
		return out, nil
	}, stage.WithConcurrency(4), stage.WithUnordered()))
	batches := pipeline.Then(kids, stage.Batch("batch", stage.BatchConfig[int64]{MaxCount: 7, Linger: time.Millisecond}))
	pipeline.To(batches, stage.Sink("sink", func(_ context.Context, batch []int64) error {
		time.Sleep(time.Duration(rand.N(50)) * time.Microsecond) // simulated work
		mu.Lock()
		defer mu.Unlock()
		for _, off := range batch {
			if finished[off] != 0 {
				t.Errorf("offset %d completed before the sink handling its batch returned", off)
			}
		}
		for _, off := range batch {
			returned[off]++
		}
		return nil // the completions may only start after this return
	}, stage.WithConcurrency(3)))
	p := build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for off := range int64(n) {
		if finished[off] != 1 {
			t.Fatalf("offset %d completed %d times, want once", off, finished[off])
		}
	}
	st := p.Stats()
	if st.Completed != n || st.Failed != 0 || st.InFlightBytes != 0 {
		t.Fatalf("after Run: %+v", st)
	}
	var nkids uint64
	for off := range int64(n) {
		nkids += uint64(children(off))
	}
	if fm := stageStats(t, st, "split"); fm.In != n || fm.Out != nkids {
		t.Fatalf("flatmap In %d Out %d, want %d and %d", fm.In, fm.Out, n, nkids)
	}
}

func TestFlatMapWithNoChildrenCompletesTheEvent(t *testing.T) {
	const n = 50
	src := sized(n, 1)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	none := pipeline.Then(b.Source(), stage.FlatMap("none", func(context.Context, *stage.Event) ([]int, error) { return nil, nil }, stage.WithConcurrency(2)))
	pipeline.To(none, stage.Sink("sink", func(context.Context, int) error {
		t.Error("the sink got a child of an empty FlatMap")
		return nil
	}))
	p := build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	if st := stageStats(t, p.Stats(), "none"); st.In != n || st.Out != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// While the sink holds the first batch, no event may complete: not its members (their batch is
// not sunk yet) and not the later ones (they wait behind it).
func TestBatchCompletesOnlyAfterItsSinkReturns(t *testing.T) {
	const n = 6
	src := sized(n, 1)
	done := track(src)
	g := newGate()
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	nums := pipeline.Then(b.Source(), stage.Map("offset", offsetOf))
	batches := pipeline.Then(nums, stage.Batch("by3", stage.BatchConfig[int64]{MaxCount: 3}))
	pipeline.To(batches, stage.Sink("sink", func(ctx context.Context, batch []int64) error {
		return g.pass(ctx, batch[0])
	}))
	p := build(t, b)
	wait := start(t, context.Background(), p, g.open)
	g.awaitEntries(t, 1)
	waitFor(t, "the whole stream read", func() bool { return p.Stats().Emitted == n })
	if st := p.Stats(); st.Completed != 0 || st.Failed != 0 {
		t.Fatalf("%d events completed while the sink held the first batch", st.Completed+st.Failed)
	}
	g.open()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
}

func TestFailedBatchFailsEveryMember(t *testing.T) {
	errSink := errors.New("bulk insert failed")
	src := sized(3, 1)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	nums := pipeline.Then(b.Source(), stage.Map("offset", offsetOf))
	batches := pipeline.Then(nums, stage.Batch("all", stage.BatchConfig[int64]{MaxCount: 3}))
	pipeline.To(batches, stage.Sink("sink", func(context.Context, []int64) error { return errSink }, stage.WithErrorPolicy(stage.Fail)))
	p := build(t, b)
	if err := p.Run(context.Background()); !errors.Is(err, errSink) {
		t.Fatalf("Run = %v, want the sink's error", err)
	}
	done.mu.Lock()
	defer done.mu.Unlock()
	for off := range int64(3) {
		if done.bad[off] != 1 || done.ok[off] != 0 {
			t.Fatalf("offset %d completed ok %d, not ok %d times; want not ok once", off, done.ok[off], done.bad[off])
		}
	}
}
