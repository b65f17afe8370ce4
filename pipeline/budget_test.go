package pipeline_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// newBudget returns the budget of a built (never run) pipeline.
func newBudget(t *testing.T, limit int64) *pipeline.Budget {
	t.Helper()
	b := pipeline.New(sized(0, 1), pipeline.WithBudget(limit), pipeline.WithMaxEventBytes(1))
	pipeline.To(b.Source(), stage.Sink("s", func(context.Context, *stage.Event) error { return nil }))
	return build(t, b).Budget()
}

func TestBudgetNeverExceededUnderConcurrentLoad(t *testing.T) {
	const (
		n      = 3000
		budget = 2048
		maxEv  = 256
	)
	rng := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, maxEv)
	src := pipeline.Generate(n, func(_ int64, ev *stage.Event) { ev.Value = payload[:1+rng.IntN(maxEv)] })
	done := track(src)
	var p *pipeline.Pipeline // set before Run; read by the stages
	check := func() {
		if in, lim := p.Budget().InFlight(), p.Budget().Limit(); in > lim || in < 0 {
			t.Errorf("budget holds %d bytes, limit %d", in, lim)
		}
	}
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithBudget(budget), pipeline.WithMaxEventBytes(maxEv))
	nums := pipeline.Then(b.Source(), stage.Map("spread", func(ctx context.Context, ev *stage.Event) (int64, error) {
		check()
		runtime.Gosched()
		return ev.Offset, nil
	}, stage.Concurrency(8), stage.Unordered(), stage.Capacity(4)))
	kids := pipeline.Then(nums, stage.FlatMap("twice", func(_ context.Context, v int64) ([]int64, error) {
		check()
		return []int64{v, v}, nil
	}, stage.Concurrency(4)))
	batches := pipeline.Then(kids, stage.Batch("batch", stage.BatchConfig[int64]{MaxBytes: 600, Linger: time.Millisecond}))
	pipeline.To(batches, stage.Sink("sink", func(context.Context, []int64) error {
		check()
		runtime.Gosched()
		return nil
	}, stage.Concurrency(8)))
	p = build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	st := p.Stats()
	if st.HighWaterBytes > budget || st.HighWaterBytes < budget/2 {
		t.Fatalf("high water %d bytes, budget %d: want it reached (above half), never exceeded", st.HighWaterBytes, budget)
	}
	if st.InFlightBytes != 0 || st.InFlightEvents != 0 || st.Completed != n || st.Failed != 0 {
		t.Fatalf("after Run: %+v", st)
	}
}

func TestBudgetAcquireAndReleaseFromManyGoroutines(t *testing.T) {
	const limit = 100
	bud := newBudget(t, limit)
	var held atomic.Int64 // bytes the goroutines believe they hold
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 300 {
				n := int64(1 + rng.IntN(limit))
				if i%3 == 0 {
					if !bud.TryAcquire(n) {
						continue
					}
				} else if err := bud.Acquire(context.Background(), n); err != nil {
					t.Error(err)
					return
				}
				if h := held.Add(n); h > limit {
					t.Errorf("%d bytes held at once, limit %d", h, limit)
				}
				runtime.Gosched()
				held.Add(-n)
				bud.Release(n)
			}
		})
	}
	wg.Wait()
	if bud.InFlight() != 0 || bud.HighWater() > limit || bud.HighWater() < 1 || bud.Limit() != limit {
		t.Fatalf("in flight %d, high water %d, limit %d", bud.InFlight(), bud.HighWater(), bud.Limit())
	}
}

func TestBudgetAcquireBlocksUntilReleaseOrCtxDone(t *testing.T) {
	bud := newBudget(t, 100)
	if err := bud.Acquire(context.Background(), 100); err != nil {
		t.Fatal(err)
	}
	if bud.TryAcquire(1) {
		t.Fatal("TryAcquire(1) succeeded on a full budget")
	}

	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- bud.Acquire(ctx, 1) }()
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire on a full budget after cancel = %v, want context.Canceled", err)
	}

	// Several blocked Acquires; releases wake them as room frees.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := bud.Acquire(context.Background(), 30); err != nil {
				t.Error(err)
			}
		})
	}
	bud.Release(60) // room for two
	bud.Release(30) // and the third
	wg.Wait()
	if bud.InFlight() != 100 || bud.HighWater() != 100 {
		t.Fatalf("in flight %d, high water %d; want 100 and 100", bud.InFlight(), bud.HighWater())
	}
	bud.Release(100)
	if !bud.TryAcquire(100) || bud.TryAcquire(1) {
		t.Fatal("TryAcquire does not see exactly the released room")
	}
	bud.Release(100)
	if bud.InFlight() != 0 {
		t.Fatalf("in flight %d after releasing everything", bud.InFlight())
	}
}
