package flow

import (
	"sync/atomic"
)

// startWorkers launches the stage's tasks. With one worker, or unordered, Concurrency workers
// read the input edge directly and write the output edge; the last to exit closes it. Ordered
// with several workers, a dispatcher deals inputs round-robin to per-worker slots and a
// collector reads results back in the same order, so output order equals input order while
// at most Concurrency messages (plus one per slot) are held.
func startWorkers[In, Out any](s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out], h handler[In, Out]) error {
	n := s.cfg.Concurrency
	if n == 1 || s.cfg.Unordered {
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
	n := s.cfg.Concurrency
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
					it.m.r.done(ErrAborted)
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
				s.handle(env, stopped, m, h, emit, &w)
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
