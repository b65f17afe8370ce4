package flow

// worker is one worker goroutine's private state: its call count (which picks the calls
// whose duration is sampled) and the events whose last reference ended on it while it
// handled a burst of messages, finished together (ManyFinisher) when the burst ends. Owned by
// its goroutine.
type worker struct {
	calls   uint32       // calls made, for sampling
	collect bool         // collect finished events (done) instead of finishing each at once
	fin     Finisher     // the finisher of the collected events (one pipeline's)
	bf      ManyFinisher // fin as a ManyFinisher
	evs     []*Life
	ok      []bool
	outs    uint64        // sink outputs not yet added to the stage's counter
	called  chan struct{} // the end of a call run on the call pool (Calls.do)
	slot    *callSlot     // this worker's current call, once its stage is watched (Stage.Watch)
	lives   []*Life       // the events behind the traced call (Env.Tracer), a reused buffer
}

// sample reports whether this call's duration is measured (one in sampleEvery, for a fast
// stage).
func (w *worker) sample() bool {
	w.calls++
	return w.calls%sampleEvery == 0
}

// done ends r; while collecting, its event is collected when that was its last reference.
func (w *worker) done(r ref, err error) {
	if !w.collect || r.l == nil {
		r.done(err)
		return
	}
	ev := r.l
	// ev.fin is the finisher of the life r refers to (r is the message's own reference).
	if ev.fin != w.fin {
		w.flush()
		bf, isBatch := ev.fin.(ManyFinisher)
		if !isBatch {
			r.done(err)
			return
		}
		w.fin, w.bf = ev.fin, bf
	}
	last, ok := ev.end(r.gen, err, true) // the last end retires it: recycled after FinishMany
	if !last {
		return
	}
	w.evs = append(w.evs, ev)
	w.ok = append(w.ok, ok)
}

// flush finishes the collected events.
func (w *worker) flush() {
	if len(w.evs) == 0 {
		return
	}
	w.bf.FinishMany(w.evs, w.ok)
	recycle(w.evs)
	clear(w.evs) // do not keep recycled events reachable
	w.evs, w.ok = w.evs[:0], w.ok[:0]
}
