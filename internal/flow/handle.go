package flow

import (
	"context"
	"errors"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/clock"
	"github.com/sluicehq/sluice/pool"
)

// handler processes one message: it calls the user function through invoke, and ends m's
// reference exactly once, either by emitting outputs that carry it or by finishing it. emit
// sends one output and counts it in the stage's Out (see outlet). A sink finishes a
// successful message through w, which collects it while the worker handles a burst of
// messages.
type handler[In, Out any] func(env *Env, m msg[In], emit func(msg[Out]), w *worker)

func oneHandler[In, Out any](s *Stage[In, Out], fn func(context.Context, In) (Out, bool, error)) handler[In, Out] {
	return func(env *Env, m msg[In], emit func(msg[Out]), w *worker) {
		var out Out
		var keep bool
		attempts, err := s.invoke(env, w, m.r, func(ctx context.Context) error {
			var err error
			out, keep, err = fn(ctx, m.v)
			return err
		})
		switch {
		case err != nil:
			s.failed(env, m.r, err, attempts)
		case !keep:
			s.c.filtered.Add(1)
			m.r.done(nil)
		default:
			emit(msg[Out]{v: out, r: m.r})
		}
	}
}

func manyHandler[In, Out any](s *Stage[In, Out], fn func(context.Context, In) ([]Out, error)) handler[In, Out] {
	return func(env *Env, m msg[In], emit func(msg[Out]), w *worker) {
		var outs []Out
		attempts, err := s.invoke(env, w, m.r, func(ctx context.Context) error {
			var err error
			outs, err = fn(ctx, m.v)
			return err
		})
		if err != nil {
			s.failed(env, m.r, err, attempts)
			return
		}
		if len(outs) == 0 {
			m.r.done(nil)
			return
		}
		// Take the children's references before the first is sent: a child may finish
		// before its siblings are emitted.
		m.r.addRefs(len(outs) - 1)
		for _, o := range outs {
			emit(msg[Out]{v: o, r: m.r})
		}
	}
}

func sinkHandler[In, Out any](s *Stage[In, Out], fn func(context.Context, In) error) handler[In, Out] {
	return func(env *Env, m msg[In], _ func(msg[Out]), w *worker) {
		attempts, err := s.invoke(env, w, m.r, func(ctx context.Context) error { return fn(ctx, m.v) })
		if err != nil {
			w.flush() // nor for the error handler (a dead-letter producer may block)
			s.failed(env, m.r, err, attempts)
			return
		}
		if w.collect {
			w.outs++ // added to the counter with the burst's completions
		} else {
			s.c.out.Add(1)
		}
		w.done(m.r, nil)
	}
}

// Ticket makes a stage.Done strictly single-use: its state word holds a generation and a live bit.
type Ticket struct {
	state atomic.Uint64
	r     ref
	// fin ends the message for its stage; read only by the End that won the CAS.
	fin func(t *Ticket, err error)
}

// End ends the message of generation gen: nil (Ack), an error (Nack), a Fatal (Fail) or
// ErrAborted (Abandon). A second End of one generation is a misuse, reported, never applied.
func (t *Ticket) End(gen uint64, err error) {
	if !t.state.CompareAndSwap(gen|1, (gen+2)&^1) {
		pool.ReportMisuse("stage.Done: second Ack/Nack")
		return
	}
	t.fin(t, err)
}

var tickets = pool.New[Ticket](nil)

func asyncHandler[In, Out any](s *Stage[In, Out], env *Env, fn func(context.Context, In, *Ticket, uint64) error) handler[In, Out] {
	fin := func(t *Ticket, err error) {
		r := t.r
		t.r, t.fin = ref{}, nil
		tickets.Put(t)
		switch {
		case err == nil:
			s.c.out.Add(1)
			r.done(nil)
			return
		case err == ErrAborted:
			r.done(ErrAborted)
			return
		}
		s.c.errors.Add(1)
		if fe, ok := err.(Fatal); ok {
			env.Fail(Hooks.Detach(Hooks.Failure(s.name, fe.Err, 1, r.appendLives(nil)), fe.Err))
			r.done(fe.Err)
			return
		}
		// The caller may be a goroutine the error handler waits on (a producer's report
		// reader): the policy runs on the error-handling goroutine instead. The queued entry
		// holds r, so entries never outnumber the events in flight.
		env.later(func(ctx context.Context) { s.failedCtx(ctx, env, r, err, 1) })
	}
	return func(env *Env, m msg[In], _ func(msg[Out]), w *worker) {
		// ended: fn (or a goroutine it started) ended its Done although fn then returned an
		// error or panicked, a misuse: the Done already owns m.r, so there is no retry and no
		// second failure, which would end m.r twice.
		ended := false
		attempts, err := s.invoke(env, w, m.r, func(ctx context.Context) (err error) {
			if ended {
				return nil
			}
			t := tickets.Get()
			gen := t.state.Load() &^ 1
			t.r, t.fin = m.r, fin
			t.state.Store(gen | 1)
			returned := false
			defer func() {
				if returned && err == nil {
					return // fn took ownership: the Done ends m.r
				}
				// fn did not take ownership (an error, or a panic that attempt recovers):
				// retire the ticket unused, unless its Done already ended. The CAS races a
				// late Ack from a goroutine fn started: exactly one of them wins.
				if !t.state.CompareAndSwap(gen|1, gen+2) {
					pool.ReportMisuse("stage.AsyncSink: fn ended its Done and then returned an error or panicked")
					ended = true
					err = nil
					return
				}
				t.r, t.fin = ref{}, nil
				tickets.Put(t)
			}()
			err = fn(ctx, m.v, t, gen)
			returned = true
			return err
		})
		if err != nil && !ended {
			s.failed(env, m.r, err, attempts)
		}
	}
}

// invoke runs call with the stage's timeout, panic recovery and retries, for the message whose
// reference is r. It returns the number of attempts made and the last error (nil on success).
func (s *Stage[In, Out]) invoke(env *Env, w *worker, r ref, call func(context.Context) error) (int, error) {
	for attempt := 1; ; attempt++ {
		var err error
		if env.Tracer == nil { // without a Tracer, attempt is all there is
			err = s.attempt(env, w, r, call)
		} else {
			err = s.tracedAttempt(env, w, r, attempt, call)
		}
		if err == nil {
			return attempt, nil
		}
		s.c.errors.Add(1)
		if attempt > s.cfg.Retries || env.Ctx.Err() != nil {
			return attempt, err
		}
		s.c.retries.Add(1)
		w.flush() // what the burst finished so far does not wait for the backoff
		t := time.NewTimer(s.cfg.backoffFor(attempt))
		select {
		case <-t.C:
		case <-env.Ctx.Done():
			t.Stop()
			return attempt, err
		}
	}
}

// Busy time is measured on every call that takes longer than sampleBelow; calls faster than
// that are timed one in sampleEvery and counted sampleEvery times, which keeps two clock
// reads off the hot path of cheap stages.
const (
	sampleEvery = 16
	sampleBelow = 2000 // ns
)

// attempt runs call once, on behalf of r's message. While the stage is watched (Watch), the
// worker's slot records the attempt for RunningCalls.
func (s *Stage[In, Out]) attempt(env *Env, w *worker, r ref, call func(context.Context) error) (err error) {
	ctx := env.Ctx
	var start int64
	// A fast stage times one call in sampleEvery of each worker's.
	wasFast := s.c.fast.Load()
	timed := !wasFast || w.sample()
	if timed {
		if wasFast {
			start = clock.Nanotime()
		} else {
			start = s.c.busy.begin()
		}
	}
	var slot *callSlot
	if s.w.on.Load() {
		slot = s.track(w, env.Calls != nil, r, start)
	}
	defer func() {
		if slot != nil {
			slot.start.Store(0)
		}
		if r := recover(); r != nil {
			s.c.panics.Add(1)
			err = Hooks.Panic(s.name, r, debug.Stack())
		}
		if timed {
			var d int64
			if wasFast {
				d = clock.Nanotime() - start
				s.c.busy.add(d * sampleEvery)
			} else {
				d = s.c.busy.end(start)
			}
			if fast := d < sampleBelow; fast != wasFast {
				s.c.fast.Store(fast)
			}
		}
	}()
	if s.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
	}
	return call(ctx)
}

// tracedAttempt is attempt observed by env.Tracer: the Tracer's Call gets the attempt's
// context (after the stage's timeout is applied) and the events behind r, and its end gets the
// attempt's outcome, a recovered panic included. Out of line, so that attempt's code is the
// same with or without a Tracer.
func (s *Stage[In, Out]) tracedAttempt(env *Env, w *worker, r ref, attempt int, call func(context.Context) error) error {
	var end func(error)
	err := s.attempt(env, w, r, func(ctx context.Context) error {
		w.lives = r.appendLives(w.lives[:0])
		ctx, end = env.Tracer.Call(ctx, s.name, s.kind, attempt, w.lives)
		clear(w.lives) // keep no event reachable past the call
		return call(ctx)
	})
	if end != nil {
		end(err)
	}
	return err
}

// failed ends r after its processing failed for good, according to the error policy, on the
// calling goroutine (a worker: while the error handler blocks, the stage takes no input, which
// is backpressure) with the hard-stop context.
func (s *Stage[In, Out]) failed(env *Env, r ref, err error, attempts int) {
	s.failedCtx(env.Ctx, env, r, err, attempts)
}

// failedCtx is failed with the context the error handler gets: Env.Ctx on a worker, the
// error-handling goroutine's for work queued with Env.Later. Once ctx is done (hard stop, or
// the close phase gave up) r is abandoned (not committed), never handed to the handler.
func (s *Stage[In, Out]) failedCtx(ctx context.Context, env *Env, r ref, err error, attempts int) {
	if ctx.Err() != nil {
		r.done(ErrAborted)
		return
	}
	f := Hooks.Failure(s.name, err, attempts, r.appendLives(nil))
	if s.cfg.Policy == PolicyFail {
		env.Fail(Hooks.Detach(f, err))
		r.done(err)
		return
	}
	s.c.handled.Add(1)
	if herr := env.Handle(ctx, f); herr != nil {
		env.Fail(Hooks.Detach(f, errors.Join(err, herr)))
		r.done(herr)
		return
	}
	r.done(nil)
}

// handle runs h on m, or abandons m after a hard stop. The caller counted m in.
func (s *Stage[In, Out]) handle(env *Env, stopped <-chan struct{}, m msg[In], h handler[In, Out], emit func(msg[Out]), w *worker) {
	if halted(stopped) {
		m.r.done(ErrAborted)
		return
	}
	if env.Calls != nil {
		s.handlePooled(env, m, h, emit, w)
		return
	}
	h(env, m, emit, w)
}

// handlePooled runs h on m on the pipeline's call pool (Env.Calls) and waits for it: m's call,
// its retries and its error handling hold one of the pool's workers. Its outputs are emitted
// afterwards, from the stage worker, so a full output edge never holds a pool worker. A hard
// stop while every pool worker is busy abandons m. A separate function, so that the closure
// it hands over (which escapes to the pool) costs nothing when there is no pool.
func (s *Stage[In, Out]) handlePooled(env *Env, m msg[In], h handler[In, Out], emit func(msg[Out]), w *worker) {
	var outs []msg[Out] // one output, or a FlatMap's
	collect := func(o msg[Out]) { outs = append(outs, o) }
	if err := env.Calls.do(env.Ctx, w, func() { h(env, m, collect, w) }); err != nil {
		m.r.done(ErrAborted)
		return
	}
	for _, o := range outs {
		emit(o)
	}
}

// flush finishes what w collected and adds its outputs to the counter.
func (s *Stage[In, Out]) flush(w *worker) {
	if w.outs > 0 {
		s.c.out.Add(w.outs)
		w.outs = 0
	}
	w.flush()
}
