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
// Admission is bounded by the window, not by the limit: the window starts small (newBudget's
// initial, at most the limit) and only grows, up to the limit, when the emitter finds the
// stages starved (Emitter.take). So the bytes in flight follow what the stages need (their
// workers busy, with a queue in front of them) and the limit is a cap, not a working set.
//
// Acquiring and releasing are a CAS on one counter; only a source that must wait touches the
// mutex.
type byteBudget struct {
	limit   int64
	window  atomic.Int64 // admission bound now: never above limit, never shrinks
	used    atomic.Int64 // bytes held now; never above window
	high    atomic.Int64 // highest value used ever reached
	waiters atomic.Int32 // Acquire calls waiting for room

	mu   sync.Mutex    // guards wake
	wake chan struct{} // closed (and replaced) by Release when waiters > 0
}

// newBudget returns a budget of limit bytes whose window starts at initial (at most limit).
func newBudget(limit, initial int64) *byteBudget {
	b := &byteBudget{limit: limit, wake: make(chan struct{})}
	b.window.Store(max(min(initial, limit), 1))
	return b
}

// Limit returns the budget in bytes.
func (b *byteBudget) Limit() int64 { return b.limit }

// Window returns the admission bound now (at most Limit).
func (b *byteBudget) Window() int64 { return b.window.Load() }

// grow raises the window so that n bytes more than are held now fit, and at least doubles it,
// up to the limit. It reports whether the window grew (false: it is at the limit already).
// Waiters re-check against the new window.
func (b *byteBudget) grow(n int64) bool {
	for {
		w := b.window.Load()
		if w >= b.limit {
			return false
		}
		if b.window.CompareAndSwap(w, min(b.limit, max(2*w, b.used.Load()+n))) {
			b.wakeWaiters()
			return true
		}
	}
}

// InFlight returns the bytes held now.
func (b *byteBudget) InFlight() int64 { return b.used.Load() }

// HighWater returns the most bytes ever held at once; never above Limit.
func (b *byteBudget) HighWater() int64 { return b.high.Load() }

// TryAcquire takes n bytes if they are free now; it never blocks.
func (b *byteBudget) TryAcquire(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.window.Load() {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			for h := b.high.Load(); u+n > h && !b.high.CompareAndSwap(h, u+n); h = b.high.Load() {
			}
			return true
		}
	}
}

// Acquire blocks until n bytes are free within the window or ctx is done. n must not exceed
// Limit, and it waits for ever (for ctx) while n exceeds the window and nothing grows it.
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
	b.wakeWaiters()
}

// wakeWaiters wakes every Acquire waiting, to look again.
func (b *byteBudget) wakeWaiters() {
	if b.waiters.Load() > 0 {
		b.mu.Lock()
		close(b.wake)
		b.wake = make(chan struct{})
		b.mu.Unlock()
	}
}

// initialWindow is where c's window starts: WithInitialWindow, the whole budget when that is 0.
func initialWindow(c config) int64 {
	if c.window <= 0 {
		return c.budget
	}
	return c.window
}
