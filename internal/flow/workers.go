package flow

import (
	"sync/atomic"
)

// startWorkers launches the stage's tasks. With one worker, or unordered, Concurrency workers
// read the input edge directly and write the output edge (each through its own outlet); the
// last to exit closes it. Ordered with several workers, see startOrdered.
func startWorkers[In, Out any](s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out], h handler[In, Out]) error {
	n := s.cfg.Concurrency
	if n == 1 || s.cfg.Unordered {
		var remaining atomic.Int32
		remaining.Store(int32(n))
		for range n {
			var o *outlet[Out] // a sink has no output
			if out != nil {
				o = &outlet[Out]{e: out, out: &s.c.out}
			}
			err := env.Go(func() {
				defer func() {
					if remaining.Add(-1) == 0 && out != nil {
						out.Close()
					}
				}()
				s.loop(env, in, h, o)
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	return startOrdered(s, env, in, out, h)
}

// slot is one ordered worker's pair of hand-overs: chunks of inputs in (burst slices of the
// input edge's pool), their results out, as open bursts of the output edge (see openBurst)
// that the worker appends each result to and marks at the end of each chunk.
type slot[In, Out any] struct {
	in  chan *[]msg[In]
	out chan *openBurst[Out]
}

// startOrdered runs Concurrency workers whose outputs keep the input order: a dispatcher deals
// the inputs round-robin to per-worker slots in chunks, and a collector reads each chunk's
// results back in the same order and writes them to the output edge (through an outlet). While
// the stage's calls are fast a chunk takes the inputs queued now, up to chunkLimit, so that
// dealing costs one channel operation per chunk instead of per input; while they are slow (or
// nothing else is queued) a chunk is one input, so a slow call holds no other input and every
// worker gets one. A worker hands each input's result over as soon as it has it, so a slow or
// stuck call holds back no output made before it. Held in the stage: at most 3c+2 chunks
// (one dealt, one in hand and one's results per worker, plus the dispatcher's and the
// collector's), that is 3c+2 messages while chunks are single.
func startOrdered[In, Out any](s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out], h handler[In, Out]) error {
	n := s.cfg.Concurrency
	limit := chunkLimit(s.cfg.Capacity, n)
	slots := make([]slot[In, Out], n)
	for i := range slots {
		slots[i] = slot[In, Out]{in: make(chan *[]msg[In], 1), out: make(chan *openBurst[Out], 1)}
	}
	dispatch := func() {
		defer func() {
			for i := range slots {
				close(slots[i].in)
			}
		}()
		i := 0
		var chunk *[]msg[In]
		add := func(m msg[In]) {
			if chunk == nil {
				chunk = in.getBurst()
			}
			*chunk = append(*chunk, m)
			if len(*chunk) >= limit || !s.c.fast.Load() {
				slots[i].in <- chunk
				chunk, i = nil, (i+1)%n
			}
		}
		for p := range in.ch {
			s.c.in.Add(uint64(in.each(p, add)))
			if chunk != nil && len(in.ch) == 0 { // nothing queued to add: do not wait for more
				slots[i].in <- chunk
				chunk, i = nil, (i+1)%n
			}
		}
		if chunk != nil {
			slots[i].in <- chunk
		}
	}
	collect := func() {
		o := outlet[Out]{e: out, out: &s.c.out}
		defer out.Close()
		defer o.close()
		// The first closed slot in collection order is the end of the stream: chunks are
		// dealt round-robin and the results of each end with an end mark.
		for i := 0; collectChunk(slots[i].out, &o); i = (i + 1) % n {
		}
		// Normally every slot is closed and empty here. Drain them anyway, so a worker is
		// never left blocked on its slot whatever happened.
		for i := range slots {
			for b := range slots[i].out {
				for _, m := range b.seal() {
					m.r.done(ErrAborted)
				}
				out.release(b)
			}
		}
	}
	if err := env.Go(collect); err != nil {
		return err
	}
	for i := range slots {
		sl := slots[i]
		err := env.Go(func() {
			defer close(sl.out)
			stopped := env.Ctx.Done()
			var w worker
			r := results[Out]{e: out, ch: sl.out, limit: uint32(limit)}
			emit := r.add // one closure per worker, not per message
			for chunk := range sl.in {
				for _, m := range *chunk {
					s.handle(env, stopped, m, h, emit, &w)
				}
				in.putBurst(chunk)
				if r.outs > 0 {
					s.c.out.Add(r.outs)
					r.outs = 0
				}
				r.end() // always, so the collector stays in step
			}
		})
		if err != nil {
			return err
		}
	}
	return env.Go(dispatch)
}

// results is an ordered worker's writer of its slot's results (see slot). Owned by the worker.
type results[T any] struct {
	e     *Edge[T] // the stage's output edge, whose pool the open bursts come from
	ch    chan<- *openBurst[T]
	cur   *openBurst[T] // the open burst being appended to; nil: none
	n     uint32        // messages in cur
	limit uint32        // the most messages in one open burst: the chunk limit
	outs  uint64        // results of the chunk, counted in the stage's Out at its end
}

// add hands m over at once: appended to the open burst while the collector has not sealed it
// and it holds less than limit, else in a new one, sent on the slot (which holds one: the
// worker then waits for the collector, so its results waiting there stay below 2 × limit).
func (r *results[T]) add(m msg[T]) {
	r.outs++
	if r.cur != nil && r.n < r.limit && r.cur.append(r.n, m) {
		r.n++
		return
	}
	r.release()
	r.cur, r.n = r.e.newOpen(m), 1
	r.ch <- r.cur
}

// end marks the end of the chunk's results, on the open burst if the collector has not sealed
// it, else on a new, empty one; the next chunk's results start a new burst.
func (r *results[T]) end() {
	if r.cur == nil || !r.cur.end(r.n) {
		r.release()
		r.cur = r.e.emptyOpen(endMark)
		r.ch <- r.cur
	}
	r.release()
}

func (r *results[T]) release() {
	if r.cur != nil {
		r.e.release(r.cur)
		r.cur = nil
	}
}

// collectChunk forwards one chunk's results from a worker slot, in order. It returns false
// when the slot is closed: the dispatcher dealt no further chunk.
func collectChunk[T any](results <-chan *openBurst[T], o *outlet[T]) bool {
	for b := range results {
		ms, end := b.sealEnd()
		for _, m := range ms {
			o.send(m)
		}
		o.e.release(b)
		if end {
			return true
		}
	}
	return false
}

// chunkLimit is the most inputs an ordered stage of n workers deals to one worker at once:
// its input capacity shared among the workers (so a full input edge still feeds all of
// them), at least 1 and at most MaxBurst.
func chunkLimit(capacity, n int) int { return min(max(capacity/n, 1), MaxBurst) }
