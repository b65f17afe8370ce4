package pipeline

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func TestBudgetAcquireAndReleaseFromManyGoroutines(t *testing.T) {
	const limit = 100
	bud := newBudget(limit, limit)
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
	bud := newBudget(100, 100)
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
