package pipeline_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestWindowGrowsWhenStarved: the in-flight window starts at DefaultInitialWindow (2 MiB) and
// grows when the stages are starved. A sink of 24 workers whose first 24 calls each wait until
// all 24 run at once needs 24 events of 128 KiB in flight (3 MiB): with a window that never
// grew only 15 would fit and the calls would wait for ever. Once they ran, the window stays far
// below the 64 MiB budget: it follows what the stage needs, not the cap.
func TestWindowGrowsWhenStarved(t *testing.T) {
	const n, workers, size = 200, 24, 128 << 10
	payload := make([]byte, size)
	src := pipeline.Generate(n, func(_ int64, ev *stage.Event) { ev.Value = payload })
	done := track(src)
	var running atomic.Int32
	all := make(chan struct{}) // closed once workers calls run at once
	var once sync.Once
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithDrainTimeout(time.Second))
	pipeline.To(b.Source(), stage.Sink("wide", func(ctx context.Context, ev *stage.Event) error {
		if ev.Offset >= workers {
			return nil
		}
		if running.Add(1) == workers {
			once.Do(func() { close(all) })
		}
		select {
		case <-all:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, stage.WithConcurrency(workers), stage.WithUnordered()))
	p := build(t, b)
	if st := p.Stats(); st.WindowBytes != pipeline.DefaultInitialWindow || st.BudgetBytes != pipeline.DefaultInFlightBudget {
		t.Fatalf("before Run: window %d B, budget %d B; want %d and %d", st.WindowBytes, st.BudgetBytes, pipeline.DefaultInitialWindow, pipeline.DefaultInFlightBudget)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := p.Run(ctx)
	if n := running.Load(); n < workers {
		t.Fatalf("%d of %d calls ran at once in 20 s (Run: %v): the window did not grow", n, workers, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	st := p.Stats()
	if st.WindowBytes < workers*size || st.WindowBytes > 8<<20 {
		t.Fatalf("window %d B after the run: want at least the %d B the %d calls held, and far below the %d B budget", st.WindowBytes, workers*size, workers, st.BudgetBytes)
	}
	if st.HighWaterBytes > st.WindowBytes {
		t.Fatalf("high water %d B above the window %d B", st.HighWaterBytes, st.WindowBytes)
	}
}

// TestWithInitialWindow: 0 means no window (the whole budget from the start); a negative
// value is a Build error naming the option.
func TestWithInitialWindow(t *testing.T) {
	b := pipeline.New(pipeline.Generate(0, func(int64, *stage.Event) {}), pipeline.WithLogger(quiet), pipeline.WithInitialWindow(0), pipeline.WithBudget(8<<20))
	pipeline.To(b.Source(), stage.Sink("s", func(context.Context, *stage.Event) error { return nil }))
	if st := build(t, b).Stats(); st.WindowBytes != 8<<20 {
		t.Fatalf("WithInitialWindow(0): window %d B, want the budget %d B", st.WindowBytes, 8<<20)
	}
	b = pipeline.New(pipeline.Generate(0, func(int64, *stage.Event) {}), pipeline.WithLogger(quiet), pipeline.WithInitialWindow(-1))
	pipeline.To(b.Source(), stage.Sink("s", func(context.Context, *stage.Event) error { return nil }))
	if _, err := b.Build(); err == nil || !strings.Contains(err.Error(), "WithInitialWindow") {
		t.Fatalf("WithInitialWindow(-1): Build error %v, want one naming WithInitialWindow", err)
	}
}
