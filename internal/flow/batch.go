package flow

import (
	"errors"
	"fmt"
	"runtime/debug"
	"time"
)

// BatchConfig says when a Batch stage flushes: at MaxCount messages, at MaxBytes bytes, or
// Linger after the batch's first message, whichever comes first. At least one of MaxCount and
// MaxBytes must be set.
//
// Linger 0 means no time limit: a partial batch waits for more input or for the end of the
// stream (the last records of a topic wait until more arrive or the pipeline stops). It is
// flushed early, smaller than its limits, only when nothing else could fill it: the source is
// blocked (its ordering or per-partition limit admits none of what it holds, or the budget is
// exhausted) and every event in flight waits in a partial batch. That happens under OrderKey
// with fewer keys than MaxCount, under OrderPartition with fewer partitions, or with events
// larger than MaxEventBytes. Without Linger the pipeline's Build also requires that the batch
// can fill within the in-flight budget: MaxCount × MaxEventBytes at most the budget, or
// MaxBytes (default Size) at most the budget minus MaxEventBytes; otherwise set a Linger.
type BatchConfig[T any] struct {
	MaxCount int
	MaxBytes int64
	Linger   time.Duration
	// Size returns a message's bytes for MaxBytes. Default: the budget bytes of the source
	// events behind the message.
	Size func(T) int64
}

// NewBatch returns a stage that groups messages into slices (see stage.Batch).
func NewBatch[T any](name string, cfg Config, err error, bc BatchConfig[T]) *Stage[T, []T] {
	s := newStage[T, []T](name, KindBatch, cfg, err)
	switch {
	case bc.MaxCount < 0 || bc.MaxBytes < 0 || bc.Linger < 0:
		s.err = errors.Join(s.err, fmt.Errorf("stage %q: BatchConfig MaxCount, MaxBytes and Linger must not be negative: %w", name, ErrInvalid))
	case bc.MaxCount == 0 && bc.MaxBytes == 0:
		s.err = errors.Join(s.err, fmt.Errorf("stage %q: BatchConfig needs MaxCount or MaxBytes: %w", name, ErrInvalid))
	}
	if s.cfg.Concurrency > 1 { // below 1 is reported by the options
		s.err = errors.Join(s.err, fmt.Errorf("stage %q: WithConcurrency must be 1 for a batch stage, got %d: %w", name, s.cfg.Concurrency, ErrInvalid))
	}
	s.start = func(s *Stage[T, []T], env *Env, in *Edge[T], out *Edge[[]T]) error {
		return env.Go(func() { s.batchLoop(env, bc, in, out) })
	}
	s.fits = func(budget, maxEventBytes int64) error { return bc.fits(name, budget, maxEventBytes) }
	return s
}

// fits is FitsBudget for a batch. Without Linger, a partial batch must be able to reach a
// limit while the budget still admits any event: MaxCount events of maxEventBytes, or MaxBytes
// (default Size, which counts the budget bytes) with room for one more event. A custom Size
// counts something the budget does not bound, so only MaxCount can vouch for it.
func (bc BatchConfig[T]) fits(name string, budget, maxEventBytes int64) error {
	if bc.Linger > 0 || maxEventBytes < 1 || budget < maxEventBytes { // an invalid budget is the pipeline's error
		return nil
	}
	maxCount, maxBytes := budget/maxEventBytes, budget-maxEventBytes
	if bc.Size == nil && bc.MaxBytes > budget {
		return fmt.Errorf("stage %q: BatchConfig.MaxBytes %d is above the in-flight budget %d and there is no Linger: the batch can never reach it; set MaxBytes to at most %d, or a Linger: %w",
			name, bc.MaxBytes, budget, maxBytes, ErrInvalid)
	}
	if (bc.MaxCount > 0 && int64(bc.MaxCount) <= maxCount) || (bc.MaxBytes > 0 && bc.Size == nil && bc.MaxBytes <= maxBytes) {
		return nil
	}
	var why string
	switch {
	case bc.MaxCount > 0:
		why = fmt.Sprintf("BatchConfig.MaxCount %d × MaxEventBytes %d is above the in-flight budget %d", bc.MaxCount, maxEventBytes, budget)
	case bc.Size != nil:
		why = "BatchConfig.MaxBytes counts a custom Size, which the in-flight budget does not bound"
	default:
		why = fmt.Sprintf("BatchConfig.MaxBytes %d leaves less than MaxEventBytes %d of the in-flight budget %d", bc.MaxBytes, maxEventBytes, budget)
	}
	return fmt.Errorf("stage %q: %s and there is no Linger: the batch may wait forever for input the budget keeps out; set a Linger, MaxCount to at most %d, or MaxBytes to at most %d (default Size), or raise the budget: %w",
		name, why, maxCount, maxBytes, ErrInvalid)
}

func (s *Stage[T, Out]) batchLoop(env *Env, bc BatchConfig[T], in *Edge[T], out *Edge[[]T]) {
	defer out.Close()
	var (
		vals   []T
		g      *group
		bytes  int64
		weight int64 // source events behind the partial batch (Stats.Batched)
		timer  = time.NewTimer(time.Hour)
		armed  bool
		// stalled is the stall signal's generation while a partial batch without Linger
		// waits (nil otherwise: a nil channel never fires). Taken when the batch starts, so
		// any later stall reaches it.
		stalled <-chan struct{}
	)
	timer.Stop()
	defer timer.Stop()
	flush := func() {
		if g == nil {
			return
		}
		start := time.Now()
		g.refs.Store(1)
		g.events = weight
		batch := msg[[]T]{v: vals, r: ref{grp: g}}
		vals, g, bytes, weight, stalled = nil, nil, 0, 0, nil
		s.c.batched.Store(0)
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
			m.r.done(ErrAborted)
			return
		}
		sz := m.r.size()
		if bc.Size != nil {
			var err error
			if sz, err = s.sizeOf(bc, m.v); err != nil { // a panic: the pipeline stops hard
				env.Fail(err)
				m.r.done(err)
				return
			}
		}
		if g == nil {
			g = groups.Get()
			vals = make([]T, 0, max(bc.MaxCount, 1))
			if bc.Linger > 0 {
				timer.Reset(bc.Linger)
				armed = true
			} else if env.Stalled != nil {
				stalled = env.Stalled()
			}
		}
		vals = append(vals, m.v)
		g.members = append(g.members, m.r)
		weight += m.r.weight()
		s.c.batched.Store(weight)
		g.size += m.r.size()
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
		case <-stalled:
			// Nothing else can move. Input already queued may still fill the batch: read it
			// first and wait for the next stall (the source reports one every poll while
			// blocked).
			if len(in.ch) == 0 {
				flush()
			} else {
				stalled = env.Stalled()
			}
		case <-env.Ctx.Done():
			if g != nil {
				for _, r := range g.members {
					r.done(ErrAborted)
				}
				groups.Put(g)
				g = nil
				s.c.batched.Store(0)
			}
			// Keep reading so the upstream cascade of closing edges completes.
			for p := range in.ch {
				in.each(p, func(m msg[T]) {
					s.c.in.Add(1)
					m.r.done(ErrAborted)
				})
			}
			return
		}
	}
}

// sizeOf calls the user's BatchConfig.Size, recovering a panic as a *stage.PanicError.
func (s *Stage[In, Out]) sizeOf(bc BatchConfig[In], v In) (n int64, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.c.panics.Add(1)
			err = Hooks.Panic(s.name+" BatchConfig.Size", r, debug.Stack())
		}
	}()
	return bc.Size(v), nil
}
