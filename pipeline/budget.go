package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
)

// byteBudget is the pipeline-wide limit on bytes in flight: a source acquires an event's size
// before emitting it, and the event's completion releases it. Channel capacities cap how many
// events wait; the budget caps how many bytes they hold.
//
// Acquiring and releasing are a CAS on one counter; only a source that must wait touches the
// mutex.
type byteBudget struct {
	limit   int64
	used    atomic.Int64 // bytes held now; never above limit
	high    atomic.Int64 // highest value used ever reached
	waiters atomic.Int32 // Acquire calls waiting for room

	mu   sync.Mutex    // guards wake
	wake chan struct{} // closed (and replaced) by Release when waiters > 0
}

func newBudget(limit int64) *byteBudget {
	return &byteBudget{limit: limit, wake: make(chan struct{})}
}

// Limit returns the budget in bytes.
func (b *byteBudget) Limit() int64 { return b.limit }

// InFlight returns the bytes held now.
func (b *byteBudget) InFlight() int64 { return b.used.Load() }

// HighWater returns the most bytes ever held at once; never above Limit.
func (b *byteBudget) HighWater() int64 { return b.high.Load() }

// TryAcquire takes n bytes if they are free now; it never blocks.
func (b *byteBudget) TryAcquire(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			for h := b.high.Load(); u+n > h && !b.high.CompareAndSwap(h, u+n); h = b.high.Load() {
			}
			return true
		}
	}
}

// Acquire blocks until n bytes are free or ctx is done. n must not exceed Limit.
func (b *byteBudget) Acquire(ctx context.Context, n int64) error {
	for {
		if b.TryAcquire(n) {
			return nil
		}
		b.waiters.Add(1)
		b.mu.Lock()
		wake := b.wake
		b.mu.Unlock()
		// Re-check after registering: a Release in between saw the waiter and will close
		// the channel we hold, or freed room we now see.
		if b.TryAcquire(n) {
			b.waiters.Add(-1)
			return nil
		}
		select {
		case <-wake:
			b.waiters.Add(-1)
		case <-ctx.Done():
			b.waiters.Add(-1)
			return ctx.Err()
		}
	}
}

// Release returns n bytes taken by Acquire or TryAcquire.
func (b *byteBudget) Release(n int64) {
	b.used.Add(-n)
	if b.waiters.Load() > 0 {
		b.mu.Lock()
		close(b.wake)
		b.wake = make(chan struct{})
		b.mu.Unlock()
	}
}
