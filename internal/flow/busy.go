package flow

import (
	"sync"
	"sync/atomic"

	"github.com/sluicehq/sluice/internal/clock"
)

// busyClock accounts the time a stage's workers spend in user code. Calls of a stage in slow
// mode (calls above sampleBelow, see attempt) are bracketed by begin and end, so a call still
// running counts as it runs: a stage stuck in its function shows as busy (and as the
// bottleneck) while it is stuck, not only once the call returns. Calls of a stage in fast mode
// are sampled and added when they end, keeping the mutex off the hot path of cheap stages; so
// a stage that was fast when it got stuck counts the stuck call only if it was sampled (one in
// sampleEvery).
//
// Bracketed calls read the clock under the mutex, in begin, end and total alike, so total
// never decreases from one call to the next.
type busyClock struct {
	sampled atomic.Int64 // nanoseconds of sampled fast calls, scaled by sampleEvery

	mu       sync.Mutex // guards the fields below, which a reader needs together
	done     int64      // nanoseconds of finished bracketed calls
	running  int64      // bracketed calls in progress
	startSum int64      // sum of their start times (clock.Nanotime)
}

// begin opens a bracketed call and returns its start time.
func (b *busyClock) begin() (start int64) {
	b.mu.Lock()
	start = clock.Nanotime()
	b.running++
	b.startSum += start
	b.mu.Unlock()
	return start
}

// end closes the bracketed call that began at start and returns its duration.
func (b *busyClock) end(start int64) (d int64) {
	b.mu.Lock()
	d = clock.Nanotime() - start
	b.running--
	b.startSum -= start
	b.done += d
	b.mu.Unlock()
	return d
}

// add accounts d nanoseconds of work that was not bracketed.
func (b *busyClock) add(d int64) { b.sampled.Add(d) }

// total returns the busy nanoseconds up to now, bracketed calls still running included.
func (b *busyClock) total() int64 {
	b.mu.Lock()
	t := b.done + b.running*clock.Nanotime() - b.startSum
	b.mu.Unlock()
	return t + b.sampled.Load()
}
