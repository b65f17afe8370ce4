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

// item is one input's result in an ordered worker's slot: its output (one), its outputs (a
// FlatMap's several, in a burst slice of the output edge's pool), or none; end marks the last
// input of a chunk.
type item[T any] struct {
	m    msg[T]
	many *[]msg[T]
	one  bool
	end  bool
}

// slot is one ordered worker's pair of hand-overs: chunks of inputs in (burst slices of the
// input edge's pool), one item per input out.
type slot[In, Out any] struct {
	in  chan *[]msg[In]
	out chan item[Out]
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
		slots[i] = slot[In, Out]{in: make(chan *[]msg[In], 1), out: make(chan item[Out], limit)}
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
		// dealt round-robin and each ends with an end item.
		for i := 0; collectChunk(slots[i].out, &o); i = (i + 1) % n {
		}
		// Normally every slot is closed and empty here. Drain them anyway, so a worker is
		// never left blocked on its slot whatever happened.
		for i := range slots {
			for it := range slots[i].out {
				it.each(func(m msg[Out]) { m.r.done(ErrAborted) })
				if it.many != nil {
					out.putBurst(it.many)
				}
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
			var it item[Out]
			emit := func(m msg[Out]) {
				switch {
				case !it.one:
					it.m, it.one = m, true
				case it.many == nil:
					it.many = out.getBurst()
					*it.many = append(*it.many, it.m, m)
				default:
					*it.many = append(*it.many, m)
				}
			}
			for chunk := range sl.in {
				for j, m := range *chunk {
					it = item[Out]{}
					s.handle(env, stopped, m, h, emit, &w)
					it.end = j == len(*chunk)-1
					switch {
					case it.many != nil:
						s.c.out.Add(uint64(len(*it.many)))
					case it.one:
						s.c.out.Add(1)
					}
					sl.out <- it // always, so the collector stays in step
				}
				in.putBurst(chunk)
			}
		})
		if err != nil {
			return err
		}
	}
	return env.Go(dispatch)
}

// each calls f for every output of the item, in order.
func (it *item[T]) each(f func(msg[T])) {
	switch {
	case it.many != nil:
		for _, m := range *it.many {
			f(m)
		}
	case it.one:
		f(it.m)
	}
}

// collectChunk forwards one chunk's results from a worker slot, in order. It returns false
// when the slot is closed: the dispatcher dealt no further chunk.
func collectChunk[T any](results <-chan item[T], o *outlet[T]) bool {
	for it := range results {
		switch {
		case it.many != nil:
			for _, m := range *it.many {
				o.send(m)
			}
			o.e.putBurst(it.many)
		case it.one:
			o.send(it.m)
		}
		if it.end {
			return true
		}
	}
	return false
}

// chunkLimit is the most inputs an ordered stage of n workers deals to one worker at once:
// its input capacity shared among the workers (so a full input edge still feeds all of
// them), at least 1 and at most MaxBurst.
func chunkLimit(capacity, n int) int { return min(max(capacity/n, 1), MaxBurst) }
