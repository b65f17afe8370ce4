package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// callMeter counts the user calls running at once, measured inside the calls themselves (a
// meter the pipeline does not own), and the most ever seen.
type callMeter struct{ running, most atomic.Int64 }

func (m *callMeter) call(d time.Duration) {
	n := m.running.Add(1)
	for {
		most := m.most.Load()
		if n <= most || m.most.CompareAndSwap(most, n) {
			break
		}
	}
	time.Sleep(d) // the call's work
	m.running.Add(-1)
}

// runMetered runs n events through three stages of Concurrency 4 (12 calls could run at once)
// with the given cap (0: none), each call taking d, and returns the most calls seen at once.
func runMetered(t *testing.T, n int64, maxCalls int, d time.Duration) int64 {
	t.Helper()
	var m callMeter
	src := pipeline.Generate(n, func(i int64, ev *stage.Event) {})
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithMaxCalls(maxCalls))
	pass := func(_ context.Context, ev *stage.Event) (*stage.Event, error) { m.call(d); return ev, nil }
	s := pipeline.Then(b.Source(), stage.Map("a", pass, stage.WithConcurrency(4), stage.WithUnordered()))
	s = pipeline.Then(s, stage.Map("b", pass, stage.WithConcurrency(4)))
	pipeline.To(s, stage.Sink("c", func(context.Context, *stage.Event) error { m.call(d); return nil }, stage.WithConcurrency(4)))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	return m.most.Load()
}

// WithMaxCalls caps the user calls running at once across all stages, measured inside the
// calls; without the cap the same pipeline runs more at once (so the cap is what bounds them).
func TestMaxCallsCapsCallsAcrossStages(t *testing.T) {
	const capCalls = 3
	if most := runMetered(t, 600, capCalls, 200*time.Microsecond); most > capCalls || most < 1 {
		t.Fatalf("%d calls ran at once under WithMaxCalls(%d)", most, capCalls)
	}
	if most := runMetered(t, 600, 0, 200*time.Microsecond); most <= capCalls {
		t.Fatalf("without a cap at most %d calls ran at once: the capped run proves nothing", most)
	}
}

// A cap of one call, far below the stages' total Concurrency (12), with a slow last stage and
// edges of capacity 1: the workers of the first stages block on full edges while holding no
// pool worker, so the slow sink always gets one and the pipeline completes.
func TestMaxCallsBelowConcurrencyWithSlowLastStageCompletes(t *testing.T) {
	const n = 300
	var m callMeter
	src := pipeline.Generate(n, func(i int64, ev *stage.Event) {})
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithMaxCalls(1))
	pass := func(_ context.Context, ev *stage.Event) (*stage.Event, error) { m.call(0); return ev, nil }
	s := pipeline.Then(b.Source(), stage.Map("a", pass, stage.WithConcurrency(4), stage.WithCapacity(1)))
	s = pipeline.Then(s, stage.FlatMap("b", func(_ context.Context, ev *stage.Event) ([]*stage.Event, error) {
		m.call(0)
		return []*stage.Event{ev, ev}, nil
	}, stage.WithConcurrency(4), stage.WithUnordered(), stage.WithCapacity(1)))
	pipeline.To(s, stage.Sink("slow", func(context.Context, *stage.Event) error { m.call(time.Millisecond); return nil },
		stage.WithConcurrency(4), stage.WithCapacity(1)))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	if most := m.most.Load(); most != 1 {
		t.Fatalf("%d calls ran at once under WithMaxCalls(1)", most)
	}
}

func TestMaxCallsNegativeIsAConstructionError(t *testing.T) {
	b := pipeline.New(pipeline.FromSlice(nil), pipeline.WithMaxCalls(-1))
	pipeline.To(b.Source(), stage.Sink("s", func(context.Context, *stage.Event) error { return nil }))
	if _, err := b.Build(); err == nil || !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), "WithMaxCalls") {
		t.Fatalf("Build = %v, want an error naming WithMaxCalls", err)
	}
}
