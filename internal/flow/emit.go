package flow

import (
	"context"
	"sync"
	"time"
)

// Emit emits a source event (v, whose lifecycle is l) on the pipeline's first edge, blocking
// while it has no room (backpressure) until ctx is done. l must have been prepared with Begin.
// On error the event was not emitted and the caller still owns its reference.
func Emit[T any](ctx context.Context, e *Edge[T], v T, l *Life) error {
	if !e.put(ctx, parcel[T]{m: eventMsg(v, l)}, 1, -1) {
		return ctx.Err()
	}
	return nil
}

// TryEmit emits v only if the first edge has room now; it never blocks.
func TryEmit[T any](e *Edge[T], v T, l *Life) bool {
	return e.put(context.Background(), parcel[T]{m: eventMsg(v, l)}, 1, 0)
}

// EmitBurst emits vs (at most MaxBurst; ls[i] is vs[i]'s lifecycle, prepared with Begin) as
// one burst on the first edge: one slot, one channel operation. While the edge has no room for
// the burst (see Edge) it waits up to wait (0: not at all) or until ctx is done. It reports
// whether the burst was emitted; if not, the caller still owns every event's reference. Use it
// on an edge that TakesBursts.
func EmitBurst[T any](ctx context.Context, e *Edge[T], vs []T, ls []*Life, wait time.Duration) bool {
	if len(vs) > MaxBurst {
		panic("flow.EmitBurst: more than MaxBurst events")
	}
	burst := e.getBurst()
	for i, v := range vs {
		*burst = append(*burst, eventMsg(v, ls[i]))
	}
	if e.put(ctx, parcel[T]{burst: burst}, len(vs), max(wait, 0)) {
		return true
	}
	e.putBurst(burst)
	return false
}

func eventMsg[T any](v T, l *Life) msg[T] { return msg[T]{v: v, r: ref{l: l, gen: l.gen()}} }

// put sends p, of n messages, when the edge has room for it: a free slot and, on an edge that
// takes bursts, room for n more messages (see Edge). It waits for room up to wait (0: not at
// all; < 0: no bound) or until ctx is done, and reports whether p was sent.
func (e *Edge[T]) put(ctx context.Context, p parcel[T], n int, wait time.Duration) bool {
	if !e.bursts { // a plain channel: its slots are the room
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
// waits on one per burst, and a timer (or a context with a deadline) per wait would be garbage
// on the hot path. Since Go 1.23 a stopped timer's channel holds no stale value.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}
