package stage

import (
	"sync"
	"sync/atomic"
)

// busyClock accounts the time a stage's workers spend in user code. Calls of a stage in slow
// mode (calls above sampleBelow, see attempt) are bracketed by begin and end, so a call still
// running counts as it runs: a stage stuck in its function shows as busy (and as the
// bottleneck) while it is stuck, not only once the call returns. Calls of a stage in fast mode
// are sampled and added when they end, keeping the mutex off the hot path of cheap stages.
type busyClock struct {
	sampled atomic.Int64 // nanoseconds of sampled fast calls, scaled by sampleEvery

	mu       sync.Mutex // guards the fields below, which a reader needs together
	done     int64      // nanoseconds of finished bracketed calls (and Batch flushes)
	running  int64      // bracketed calls in progress
	startSum int64      // sum of their start times (nanotime)
}

func (b *busyClock) begin(start int64) {
	b.mu.Lock()
	b.running++
	b.startSum += start
	b.mu.Unlock()
}

// end closes the bracketed call that began at start and lasted d nanoseconds.
func (b *busyClock) end(start, d int64) {
	b.mu.Lock()
	b.running--
	b.startSum -= start
	b.done += d
	b.mu.Unlock()
}

// add accounts d nanoseconds of work that was not bracketed.
func (b *busyClock) add(d int64) { b.sampled.Add(d) }

// total returns the busy nanoseconds up to now, bracketed calls still running included. It
// never decreases from one call to the next.
func (b *busyClock) total(now int64) int64 {
	b.mu.Lock()
	t := b.done + b.running*now - b.startSum
	b.mu.Unlock()
	return t + b.sampled.Load()
}
