package kafka

import (
	"context"
	"time"
)

// barrierPoll is how often the polling goroutine still calls Poll during an exactly-once
// barrier (for rebalance callbacks, errors and statistics; each call may return one message,
// which is held). Between those calls it waits for the events in flight to finish instead.
const barrierPoll = 50 * time.Millisecond

// barrierWait is the poll loop's step at a barrier in place of Poll. It reports false (the
// loop polls) unless a barrier is draining, no burst is pending and the last Poll was less
// than barrierPoll ago; then it waits until an event completes, barrierPoll after that Poll,
// or ctx ends, and reports true (the loop goes on as after an idle Poll: retries the held
// messages up to the marks, and commits once drained).
//
// Why: what Poll returns during a barrier is above its partition's mark and can only be held.
// Polling on, the source takes librdkafka's whole prefetch in milliseconds, and holding it
// fills maxHeldPerPartition or Memory.Held and pauses partitions; a pause discards their
// prefetch, and after the resume librdkafka fetches them again, up to fetch.wait.max.ms later
// (the bench saw copies resume 0.4–0.9 s after the commit). Left unpolled, the prefetch stays
// in librdkafka, bounded by queued.max.messages.kbytes (Memory.Prefetch), and is consumed as
// soon as the next transaction begins. Polling goroutine.
func (s *Source) barrierWait(ctx context.Context) bool {
	t := s.txn
	if t == nil || !t.draining || len(s.burst) > 0 {
		return false
	}
	left := barrierPoll - time.Since(s.lastPoll)
	if left <= 0 {
		return false
	}
	if s.drained() {
		return true // txnTick commits now
	}
	timer := time.NewTimer(left)
	defer timer.Stop()
	select {
	case <-s.barrierWake:
	case <-timer.C:
	case <-ctx.Done():
	}
	return true
}

// wakeBarrier wakes barrierWait (exactly once only; a completion while no barrier waits
// leaves a stale wake-up, which costs one extra look). Any goroutine.
func (s *Source) wakeBarrier() {
	if s.txn == nil {
		return
	}
	select {
	case s.barrierWake <- struct{}{}:
	default:
	}
}
