package stage

import (
	"errors"
	"fmt"
	"time"
)

// BatchConfig says when a Batch stage flushes: at MaxCount messages, at MaxBytes bytes, or
// Linger after the batch's first message, whichever comes first. At least one of MaxCount and
// MaxBytes must be set; Linger 0 means no time limit (a partial batch then waits for more
// input or for the end of the stream).
type BatchConfig[T any] struct {
	MaxCount int
	MaxBytes int64
	Linger   time.Duration
	// Size returns a message's bytes for MaxBytes. Default: the budget bytes of the source
	// events behind the message.
	Size func(T) int64
}

// Batch returns a stage that groups consecutive inputs into slices, in input order. The slice
// is newly allocated per batch and belongs to the next stage. The events behind a batch
// complete when the batch (and whatever derives from it) completes. A batch stage runs one
// worker; Concurrency other than 1 is a construction error.
func Batch[T any](name string, bc BatchConfig[T], opts ...Option) *Stage[T, []T] {
	s := newStage[T, []T](name, KindBatch, opts)
	// Join with the options' errors: Build reports every problem.
	switch {
	case bc.MaxCount < 0 || bc.MaxBytes < 0 || bc.Linger < 0:
		s.err = errors.Join(s.err, fmt.Errorf("stage %q: BatchConfig MaxCount, MaxBytes and Linger must not be negative: %w", name, ErrInvalid))
	case bc.MaxCount == 0 && bc.MaxBytes == 0:
		s.err = errors.Join(s.err, fmt.Errorf("stage %q: BatchConfig needs MaxCount or MaxBytes: %w", name, ErrInvalid))
	}
	if s.cfg.concurrency > 1 { // below 1 is reported by the options
		s.err = errors.Join(s.err, fmt.Errorf("stage %q: Concurrency must be 1 for a batch stage, got %d: %w", name, s.cfg.concurrency, ErrInvalid))
	}
	s.start = func(s *Stage[T, []T], env *Env, in *Edge[T], out *Edge[[]T]) error {
		return env.Go(func() { s.batchLoop(env, bc, in, out) })
	}
	return s
}

func (s *Stage[T, Out]) batchLoop(env *Env, bc BatchConfig[T], in *Edge[T], out *Edge[[]T]) {
	defer out.Close()
	var (
		vals  []T
		g     *group
		bytes int64
		timer = time.NewTimer(time.Hour)
		armed bool
	)
	timer.Stop()
	defer timer.Stop()
	flush := func() {
		if g == nil {
			return
		}
		start := time.Now()
		g.refs.Store(1)
		batch := msg[[]T]{v: vals, r: ref{grp: g}}
		vals, g, bytes = nil, nil, 0
		if armed {
			timer.Stop()
			armed = false
		}
		s.c.busy.add(int64(time.Since(start)))
		send(out, batch)
		s.c.out.Add(1)
	}
	add := func(m msg[T]) {
		s.c.in.Add(1)
		if halted(env.Ctx.Done()) {
			m.r.done(errAborted)
			return
		}
		if g == nil {
			g = groups.Get()
			vals = make([]T, 0, max(bc.MaxCount, 1))
			if bc.Linger > 0 {
				timer.Reset(bc.Linger)
				armed = true
			}
		}
		vals = append(vals, m.v)
		g.members = append(g.members, m.r)
		sz := m.r.size()
		g.size += sz
		if bc.Size != nil {
			sz = bc.Size(m.v)
		}
		bytes += sz
		if (bc.MaxCount > 0 && len(vals) >= bc.MaxCount) || (bc.MaxBytes > 0 && bytes >= bc.MaxBytes) {
			flush()
		}
	}
	for {
		select {
		case p, ok := <-in.ch:
			if !ok {
				flush()
				return
			}
			in.each(p, add)
		case <-timer.C:
			armed = false
			flush()
		case <-env.Ctx.Done():
			if g != nil {
				for _, r := range g.members {
					r.done(errAborted)
				}
				groups.Put(g)
				g = nil
			}
			// Keep reading so the upstream cascade of closing edges completes.
			for p := range in.ch {
				in.each(p, func(m msg[T]) {
					s.c.in.Add(1)
					m.r.done(errAborted)
				})
			}
			return
		}
	}
}
