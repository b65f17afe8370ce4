package pipeline

import (
	"context"
	"sync"
	"time"
)

// errorQueue is the pipeline's error-handling goroutine, one per Run: it runs the work handed
// over by stage.Env.Later (an async sink's Nack, an oversized event) in order, so that no
// error handler runs on a goroutine that must not block: a producer's delivery-report reader
// (Producer.Close waits for it) or the Kafka poll loop (max.poll.interval.ms).
//
// Adding never blocks. The queue has no fixed capacity, yet it is bounded: every entry holds
// at least one reference to an unfinished source event, which it ends when it runs, so there
// are never more entries than events in flight (bounded by the byte budget and the source's
// in-flight limits).
//
// Its context is derived from the hard-stop context and is also cancelled when the close
// phase gives up (stop): a handler stuck retrying returns, and the entries still queued run
// with the cancelled context, so they fail fast and their events are not committed.
type errorQueue struct {
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: an entry was added, or stop was called
	done   chan struct{} // closed when the goroutine returned

	mu       sync.Mutex
	fns      []func(context.Context) // queued, oldest first
	running  bool                    // an entry is running
	stopping bool                    // stop was called: return once the queue is empty
	stopped  bool                    // the goroutine returned: later runs entries itself
	idle     chan struct{}           // closed when nothing is queued or running (see waitIdle)
}

// newErrorQueue starts the goroutine; stop ends it.
func newErrorQueue(hardCtx context.Context) *errorQueue {
	ctx, cancel := context.WithCancel(hardCtx)
	q := &errorQueue{ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run()
	return q
}

// later queues fn and returns at once. After stop (a late Nack from an async sink that did not
// end its Done in its close hook) fn runs at once with the cancelled context.
func (q *errorQueue) later(fn func(context.Context)) {
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		fn(q.ctx)
		return
	}
	q.fns = append(q.fns, fn)
	q.mu.Unlock()
	q.signal()
}

func (q *errorQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *errorQueue) run() {
	defer close(q.done)
	q.mu.Lock()
	for {
		if len(q.fns) == 0 {
			q.running = false
			if q.idle != nil {
				close(q.idle)
				q.idle = nil
			}
			if q.stopping {
				q.stopped = true
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			<-q.wake
			q.mu.Lock()
			continue
		}
		fn := q.fns[0]
		q.fns[0] = nil
		q.fns = q.fns[1:]
		q.running = true
		q.mu.Unlock()
		fn(q.ctx)
		q.mu.Lock()
	}
}

// waitIdle waits until nothing is queued or running, or until timeout is done; it reports
// whether the queue went idle.
func (q *errorQueue) waitIdle(timeout <-chan struct{}) bool {
	q.mu.Lock()
	if len(q.fns) == 0 && !q.running {
		q.mu.Unlock()
		return true
	}
	if q.idle == nil {
		q.idle = make(chan struct{})
	}
	idle := q.idle
	q.mu.Unlock()
	select {
	case <-idle:
		return true
	case <-timeout:
		return false
	}
}

// stop cancels the queue's context (a running handler returns; the entries still queued run
// with the cancelled context and end their events not ok), waits for the goroutine to return,
// and makes later run entries itself from then on. The pipeline calls it once, in the close
// phase, after every event finished or the close timeout expired: in the first case nothing is
// queued any more, since every entry holds an unfinished event.
//
// It waits for the goroutine at most stopWait: a handler that ignores its context must not hold
// Run. The goroutine then ends once that handler returns (the entries after it run with the
// cancelled context first).
func (q *errorQueue) stop() {
	q.cancel()
	q.mu.Lock()
	q.stopping = true
	q.mu.Unlock()
	q.signal()
	t := time.NewTimer(stopWait)
	defer t.Stop()
	select {
	case <-q.done:
	case <-t.C:
	}
}

// stopWait bounds how long stop waits for a handler after cancelling its context.
const stopWait = 100 * time.Millisecond
