package stage

import (
	"context"
	"sync"
	"time"
)

// EmitEvent emits a source event on the pipeline's first edge, blocking while it has no room
// (backpressure) until ctx is done. The event must have been prepared with Begin. On error
// the event was not emitted and the caller still owns its reference.
func EmitEvent(ctx context.Context, e *Edge[*Event], ev *Event) error {
	if !e.put(ctx, parcel[*Event]{m: eventMsg(ev)}, 1, -1) {
		return ctx.Err()
	}
	return nil
}

// TryEmitEvent emits ev only if the first edge has room now; it never blocks.
func TryEmitEvent(e *Edge[*Event], ev *Event) bool {
	return e.put(context.Background(), parcel[*Event]{m: eventMsg(ev)}, 1, 0)
}

// EmitEvents emits evs (at most MaxRun, each prepared with Begin) as one run on the first
// edge: one slot, one channel operation. While the edge has no room for the run (see Edge) it
// waits up to wait (0: not at all) or until ctx is done. It reports whether the run was
// emitted; if not, the caller still owns every event's reference. Use it on an edge that
// TakesRuns.
func EmitEvents(ctx context.Context, e *Edge[*Event], evs []*Event, wait time.Duration) bool {
	if len(evs) > MaxRun {
		panic("stage.EmitEvents: more than MaxRun events")
	}
	run := e.getRun()
	for _, ev := range evs {
		*run = append(*run, eventMsg(ev))
	}
	if e.put(ctx, parcel[*Event]{run: run}, len(evs), max(wait, 0)) {
		return true
	}
	e.putRun(run)
	return false
}

func eventMsg(ev *Event) msg[*Event] { return msg[*Event]{v: ev, r: ref{ev: ev, gen: ev.gen()}} }

// put sends p, of n messages, when the edge has room for it: a free slot and, on an edge that
// takes runs, room for n more messages (see Edge). It waits for room up to wait (0: not at
// all; < 0: no bound) or until ctx is done, and reports whether p was sent.
func (e *Edge[T]) put(ctx context.Context, p parcel[T], n int, wait time.Duration) bool {
	if !e.runs { // a plain channel: its slots are the room
		select {
		case e.ch <- p:
			return true
		default:
		}
		if wait == 0 {
			return false
		}
		expired, stop := timer(wait)
		defer stop()
		select {
		case e.ch <- p:
			return true
		case <-ctx.Done():
		case <-expired:
		}
		return false
	}
	if e.roomFor(n) {
		select {
		case e.ch <- p:
			e.sent(n)
			return true
		default: // the slots are full: wait below
		}
	}
	if wait == 0 {
		return false
	}
	expired, stop := timer(wait)
	defer stop()
	for {
		e.waiting.Add(1)
		if e.roomFor(n) { // re-check after announcing the wait: see Edge.waiting
			e.waiting.Add(-1)
			select {
			case e.ch <- p:
				e.sent(n)
				return true
			case <-ctx.Done():
			case <-expired:
			}
			break
		}
		select {
		case <-e.space:
			e.waiting.Add(-1)
			continue
		case <-ctx.Done():
		case <-expired:
		}
		e.waiting.Add(-1)
		break
	}
	e.wakeWaiter() // a wake-up this sender took but did not use goes to the next one
	return false
}

// timer returns a channel that fires after wait (nil when wait < 0: never) and its stop.
func timer(wait time.Duration) (<-chan time.Time, func()) {
	if wait < 0 {
		return nil, func() {}
	}
	t := timers.Get().(*time.Timer)
	t.Reset(wait)
	return t.C, func() {
		t.Stop()
		timers.Put(t)
	}
}

// timers are stopped timers for bounded waits: a polling source that fills the first edge
// waits on one per run, and a timer (or a context with a deadline) per wait would be garbage
// on the hot path. Since Go 1.23 a stopped timer's channel holds no stale value.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// Abandon ends the reference the pipeline took with Begin for an event that could not be
// emitted (the source was stopped first). The event finishes, not ok.
func Abandon(ev *Event) { ev.done(ev.gen(), errAborted) }

// Complete ends the reference the pipeline took with Begin, successfully: for an event the
// pipeline finished without sending it through the stages (an oversized event the error
// handler took).
func Complete(ev *Event) { ev.done(ev.gen(), nil) }

// Unbegin undoes Begin for an event that was not emitted after all; the caller owns it again.
func Unbegin(ev *Event) {
	ev.state.Add(^uint64(0)) // the one reference Begin added
	ev.fin = nil
	ev.size = 0
}
