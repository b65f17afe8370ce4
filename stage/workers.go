package stage

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// startWorkers launches the stage's tasks. With one worker, or unordered, Concurrency workers
// read the input edge directly and write the output edge; the last to exit closes it. Ordered
// with several workers, a dispatcher deals inputs round-robin to per-worker slots and a
// collector reads results back in the same order, so output order equals input order while
// at most Concurrency messages (plus one per slot) are held.
func startWorkers[In, Out any](s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out], h handler[In, Out]) error {
	n := s.cfg.concurrency
	if n == 1 || s.cfg.unordered {
		var remaining atomic.Int32
		remaining.Store(int32(n))
		emit := func(m msg[Out]) { send(out, m) }
		for range n {
			err := env.Go(func() {
				defer func() {
					if remaining.Add(-1) == 0 && out != nil {
						out.Close()
					}
				}()
				s.loop(env, in, h, emit)
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	return startOrdered(s, env, in, out, h)
}

// item is one result in an ordered worker's slot; end marks the end of one input's results.
type item[T any] struct {
	m   msg[T]
	end bool
}

type slot[In, Out any] struct {
	in  chan msg[In]
	out chan item[Out]
}

func startOrdered[In, Out any](s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out], h handler[In, Out]) error {
	n := s.cfg.concurrency
	slots := make([]slot[In, Out], n)
	for i := range slots {
		slots[i] = slot[In, Out]{in: make(chan msg[In], 1), out: make(chan item[Out], 1)}
	}
	dispatch := func() {
		defer func() {
			for i := range slots {
				close(slots[i].in)
			}
		}()
		i := 0
		for p := range in.ch {
			in.each(p, func(m msg[In]) {
				s.c.in.Add(1)
				slots[i].in <- m
				i = (i + 1) % n
			})
		}
	}
	collect := func() {
		defer out.Close()
		for i := 0; collectOne(slots[i].out, out); i = (i + 1) % n {
		}
		// Normally every slot is closed and empty here. Drain them anyway, so a worker is
		// never left blocked on its slot whatever happened.
		for i := range slots {
			for it := range slots[i].out {
				if !it.end {
					it.m.r.done(errAborted)
				}
			}
		}
	}
	if err := env.Go(collect); err != nil {
		return err
	}
	for i := range slots {
		sl := slots[i]
		emit := func(m msg[Out]) { sl.out <- item[Out]{m: m} }
		err := env.Go(func() {
			defer close(sl.out)
			stopped := env.Ctx.Done()
			var w worker
			for m := range sl.in {
				if halted(stopped) {
					m.r.done(errAborted)
				} else {
					h(env, m, emit, &w)
				}
				// Always end the input's results, so the collector stays in step.
				sl.out <- item[Out]{end: true}
			}
		})
		if err != nil {
			return err
		}
	}
	return env.Go(dispatch)
}

// collectOne forwards one input's results from a worker slot, in order. It returns false when
// the slot is closed: the dispatcher dealt no further input (inputs are dealt round-robin, so
// the first closed slot in collection order is the end of the stream).
func collectOne[T any](results <-chan item[T], out *Edge[T]) bool {
	for it := range results {
		if it.end {
			return true
		}
		send(out, it.m)
	}
	return false
}

// EmitEvent emits a source event on the pipeline's first edge, blocking while it is full
// (backpressure) until ctx is done. The event must have been prepared with Begin. On error
// the event was not emitted and the caller still owns its reference.
func EmitEvent(ctx context.Context, e *Edge[*Event], ev *Event) error {
	err := emitParcel(ctx, e, parcel[*Event]{m: eventMsg(ev)})
	if err == nil {
		e.sent(1)
	}
	return err
}

// TryEmitEvent emits ev only if the first edge has room now; it never blocks.
func TryEmitEvent(e *Edge[*Event], ev *Event) bool {
	select {
	case e.ch <- parcel[*Event]{m: eventMsg(ev)}:
		e.sent(1)
		return true
	default:
		return false
	}
}

// EmitEvents emits evs (at most MaxRun, each prepared with Begin) as one run on the first
// edge: one slot, one channel operation. It blocks while the edge has no room for the run
// (backpressure, see Edge) until ctx is done or, if wait > 0, for at most wait. It reports
// whether the run was emitted; if not, the caller still owns every event's reference. Use it
// only on an edge that TakesRuns.
func EmitEvents(ctx context.Context, e *Edge[*Event], evs []*Event, wait time.Duration) bool {
	if len(evs) > MaxRun {
		panic("stage.EmitEvents: more than MaxRun events")
	}
	run := e.getRun()
	for _, ev := range evs {
		*run = append(*run, eventMsg(ev))
	}
	p := parcel[*Event]{run: run}
	if e.roomFor(len(evs)) {
		select {
		case e.ch <- p:
			e.sent(len(evs))
			return true
		default: // single messages filled the channel: wait below
		}
	}
	var expired <-chan time.Time // nil: no bound but ctx
	if wait > 0 {
		t := timers.Get().(*time.Timer)
		t.Reset(wait)
		defer func() {
			t.Stop()
			timers.Put(t)
		}()
		expired = t.C
	}
	for {
		e.waiting.Add(1)
		if e.roomFor(len(evs)) { // re-check after announcing the wait: see Edge.waiting
			e.waiting.Add(-1)
			select {
			case e.ch <- p:
				e.sent(len(evs))
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
	e.putRun(run)
	return false
}

// timers are stopped timers for EmitEvents' bounded wait: a polling source that fills the
// first edge waits on one per run, and a timer (or a context with a deadline) per wait would
// be garbage on the hot path. Since Go 1.23 a stopped timer's channel holds no stale value.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

func eventMsg(ev *Event) msg[*Event] { return msg[*Event]{v: ev, r: ref{ev: ev, gen: ev.gen()}} }

func emitParcel(ctx context.Context, e *Edge[*Event], p parcel[*Event]) error {
	select {
	case e.ch <- p:
		return nil
	default:
	}
	select {
	case e.ch <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

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
