package flow

import (
	"context"
	"sync/atomic"
)

// send writes m to e, blocking while e has no room (backpressure; on an edge that takes
// bursts, room as Edge counts it). It needs no hard-stop case: every reader keeps draining its
// input until it is closed (abandoning messages after a hard stop), so a blocked send always
// ends. Not selecting on the shared hard-stop channel keeps every worker off that channel's
// lock.
func send[T any](e *Edge[T], m msg[T]) {
	if !e.bursts {
		e.ch <- parcel[T]{m: m}
		return
	}
	e.put(context.Background(), parcel[T]{m: m}, 1, -1)
}

// halted reports whether the pipeline stopped hard; a cheap non-blocking check of the
// hard-stop context's Done channel (taken once per worker, not per message).
func halted(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// outlet is one writer's end of an edge (a stage worker's, or an ordered stage's collector's),
// and the counter of what it emits (the stage's Out). On an edge that takes bursts it appends
// each output to its open burst while the reader has not sealed it and the edge has room (one
// channel operation per burst, see openBurst); otherwise, and on other edges, each output is
// sent alone. Owned by its goroutine.
type outlet[T any] struct {
	e    *Edge[T]
	out  *atomic.Uint64 // the stage's Out counter
	open *openBurst[T]  // the burst being appended to; nil: none
	n    uint32         // messages appended to open
	seen int64          // the last reading of the edge's read counter (see Edge.reserve)
}

// emit sends m, blocking while the edge has no room, and counts it in the stage's Out at once:
// the next stage counts it in its In when it takes it, and a later call of the worker's run
// may block for as long as the user function likes, so a count deferred to the run's end could
// lag without bound.
func (o *outlet[T]) emit(m msg[T]) {
	o.send(m)
	o.out.Add(1)
}

// send sends m, blocking while the edge has no room.
func (o *outlet[T]) send(m msg[T]) {
	if !o.e.bursts {
		send(o.e, m)
		return
	}
	if !o.e.reserve(&o.seen) { // full: wait for room as a single message, after what went before
		o.close()
		send(o.e, m)
		return
	}
	if o.open != nil && o.n < MaxBurst && o.open.append(o.n, m) {
		o.n++
		return
	}
	o.close()
	o.open, o.n = o.e.newOpen(m), 1
	o.e.ch <- parcel[T]{open: o.open} // its message is counted: reserve
}

// close stops appending to the open burst (the reader still gets what it holds).
func (o *outlet[T]) close() {
	if o.open != nil {
		o.e.release(o.open)
		o.open = nil
	}
}

// loop feeds every message of in to h until in is closed. Outputs count in the stage's Out as
// they are sent (outlet.emit; a sink's with the run's completions, Stage.flush). After a hard
// stop it abandons the rest instead of processing it, so the cascade of closing edges ends
// quickly. A burst (from a source, an ordered collector, or the open burst of the stage
// before) is handled as one run: counted in at once, and while the stage's calls are fast a
// sink finishes the run's events together after it. Before a retry's backoff, before the error policy, and as soon as a timed
// call was slow, it finishes what it collected at once. A slow call that was not timed (one in
// sampleEvery of a fast stage's calls is) delays the completions collected before it in its
// run by its own duration: their commit and budget wait that long, they are never lost.
func (s *Stage[In, Out]) loop(env *Env, in *Edge[In], h handler[In, Out], o *outlet[Out]) {
	stopped := env.Ctx.Done()
	var w worker
	var emit func(msg[Out])
	if o != nil {
		defer o.close()
		emit = o.emit
	}
	for p := range in.ch {
		switch {
		case p.open != nil:
			s.run(env, stopped, in, p.open.seal(), true, h, emit, &w)
			in.release(p.open)
		case p.burst != nil:
			s.run(env, stopped, in, *p.burst, false, h, emit, &w)
			in.putBurst(p.burst)
		default:
			in.took(1)
			s.c.in.Add(1)
			s.handle(env, stopped, p.m, h, emit, &w)
		}
	}
}

// run handles the messages of a burst received, in order, collecting while the stage is fast;
// then it finishes what it collected. A source's burst is taken from the edge at once (see
// Edge); the open burst of a stage before (each) is taken one message at a time, as it is
// handled, so the worker holds one message beyond its edge's capacity, as without bursts.
func (s *Stage[In, Out]) run(env *Env, stopped <-chan struct{}, in *Edge[In], ms []msg[In], each bool, h handler[In, Out], emit func(msg[Out]), w *worker) {
	s.c.in.Add(uint64(len(ms))) // received: the stage's In counts the burst at once
	if !each {
		in.took(len(ms))
	}
	for _, m := range ms {
		if each {
			in.took(1)
		}
		if w.collect = s.c.fast.Load(); !w.collect {
			s.flush(w)
		}
		s.handle(env, stopped, m, h, emit, w)
	}
	w.collect = false
	s.flush(w)
}
