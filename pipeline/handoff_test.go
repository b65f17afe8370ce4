package pipeline_test

import (
	"context"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// A stage hands its outputs to the next one-worker stage in bursts (open bursts): the sink
// after a map gets bursts and finishes their events together (CompleteMany), in order, each
// event once.
func TestStageToStageBurstsCompleteTogether(t *testing.T) {
	const n = 5000
	src := newBurstSource(n, 100, true)
	b := pipeline.New(src, pipeline.WithBudget(1<<20), pipeline.WithLogger(quiet))
	var got []int64 // the sink has one worker
	m := pipeline.Then(b.Source(), stage.Map("m", offsetOf))
	pipeline.To(m, stage.Sink("sink", func(_ context.Context, off int64) error {
		got = append(got, off)
		return nil
	}))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("sink saw %d, want %d", len(got), n)
	}
	for i, off := range got {
		if off != int64(i) {
			t.Fatalf("offset %d at position %d: order lost", off, i)
		}
	}
	src.exactlyOnceOK(t)
	if src.many == 0 {
		t.Error("no completion came through CompleteMany: the map handed its outputs over one by one")
	}
}

// A call stuck in a fast stage holds back no output made before it: with one worker (its
// outputs go on in open bursts) and with eight ordered workers (inputs dealt in chunks, each
// result handed over at once), the sink gets every offset before the stuck one while it is
// stuck, then the rest, in order.
func TestStuckCallHoldsNoEarlierOutput(t *testing.T) {
	for _, conc := range []int{1, 8} {
		t.Run(map[int]string{1: "one", 8: "ordered8"}[conc], func(t *testing.T) {
			const n, stuck = 200, 150
			src := sized(n, 1)
			done := track(src)
			g := newGate()
			b := pipeline.New(src, pipeline.WithLogger(quiet))
			m := pipeline.Then(b.Source(), stage.Map("m", func(ctx context.Context, ev *stage.Event) (int64, error) {
				if ev.Offset == stuck {
					return ev.Offset, g.pass(ctx, ev.Offset)
				}
				return ev.Offset, nil
			}, stage.WithConcurrency(conc)))
			var (
				mu  sync.Mutex
				got []int64
			)
			pipeline.To(m, stage.Sink("sink", func(_ context.Context, off int64) error {
				mu.Lock()
				got = append(got, off)
				mu.Unlock()
				return nil
			}))
			wait := start(t, context.Background(), build(t, b), g.open)
			g.awaitEntries(t, 1)
			waitFor(t, "the sink to get every offset before the stuck call's", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) == stuck
			})
			g.open()
			if err := wait(); err != nil {
				t.Fatal(err)
			}
			if len(got) != n {
				t.Fatalf("sink got %d, want %d", len(got), n)
			}
			for i, off := range got {
				if off != int64(i) {
					t.Fatalf("offset %d at position %d: order lost", off, i)
				}
			}
			done.allOKOnce(t, n)
		})
	}
}
