package stage_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// jitter simulates work of a random duration, so concurrent workers finish out of order.
func jitter() { time.Sleep(time.Duration(rand.N(300)) * time.Microsecond) }

// runOffsets runs Generate(n) → offsetOf → mid → Collector (one worker, so arrival order is
// kept) and returns what the collector got.
func runOffsets(t *testing.T, n int64, mid *stage.Stage[int64, int64]) []int64 {
	t.Helper()
	src := offsets(n)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	nums := pipeline.Then(b.Source(), stage.Map("offset", offsetOf))
	out := pipeline.Then(nums, mid)
	var got pipeline.Collector[int64]
	pipeline.To(out, got.Sink("collect"))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	done.exactlyOnceOK(t, n)
	return got.Items()
}

func TestOrderedMapConcurrency8PreservesOrder(t *testing.T) {
	const n = 400
	got := runOffsets(t, n, stage.Map("jitter", func(_ context.Context, v int64) (int64, error) {
		jitter()
		return v, nil
	}, stage.WithConcurrency(8)))
	if len(got) != n {
		t.Fatalf("got %d values, want %d", len(got), n)
	}
	for i, v := range got {
		if v != int64(i) {
			t.Fatalf("value %d is %d: order not preserved (%v...)", i, v, got[max(0, i-3):i+1])
		}
	}
}

func TestOrderedFlatMapAndFilterConcurrency8PreserveOrder(t *testing.T) {
	const n = 300
	src := offsets(n)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	nums := pipeline.Then(b.Source(), stage.Map("offset", offsetOf))
	// Offset i becomes i%3 children (0, 1 or 2 of them): 10i, 10i+1.
	kids := pipeline.Then(nums, stage.FlatMap("split", func(_ context.Context, v int64) ([]int64, error) {
		jitter()
		out := []int64{}
		for k := range v % 3 {
			out = append(out, 10*v+k)
		}
		return out, nil
	}, stage.WithConcurrency(8)))
	odd := pipeline.Then(kids, stage.Filter("odd-parent", func(_ context.Context, v int64) (bool, error) {
		jitter()
		return (v/10)%2 == 1, nil
	}, stage.WithConcurrency(8)))
	var got pipeline.Collector[int64]
	pipeline.To(odd, got.Sink("collect"))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var want []int64
	for v := range int64(n) {
		for k := range v % 3 {
			if v%2 == 1 {
				want = append(want, 10*v+k)
			}
		}
	}
	if items := got.Items(); !slices.Equal(items, want) {
		t.Fatalf("got %d values, want %d in order; first difference near %v", len(items), len(want), firstDiff(items, want))
	}
	done.exactlyOnceOK(t, n) // including the inputs with no children and those filtered out
}

func TestUnorderedMapConcurrency8DeliversTheSameSet(t *testing.T) {
	const n = 400
	got := runOffsets(t, n, stage.Map("jitter", func(_ context.Context, v int64) (int64, error) {
		jitter()
		return v, nil
	}, stage.WithConcurrency(8), stage.WithUnordered()))
	slices.Sort(got)
	for i, v := range got {
		if v != int64(i) {
			t.Fatalf("sorted value %d is %d: the set differs", i, v)
		}
	}
	if len(got) != n {
		t.Fatalf("got %d values, want %d", len(got), n)
	}
}

func firstDiff(a, b []int64) []int64 {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[i:min(len(a), i+3)]
		}
	}
	return nil
}
