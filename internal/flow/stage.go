package flow

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Env is what a running stage gets from its pipeline.
type Env struct {
	// Ctx is the hard-stop context: cancelled on a fatal error or when the drain timeout
	// expires, never merely because Run's context was cancelled (in-flight work then drains).
	Ctx context.Context
	// Go runs a long-lived task on the pipeline's pool of goroutines.
	Go func(task func()) error
	// Calls, when set, bounds the user calls running at once across the pipeline's stages:
	// a worker acquires one before each call (all its attempts) and releases it after. A
	// worker blocked on a full edge holds none.
	Calls *Calls
	// Fail records a fatal error; the pipeline stops hard and Run returns the first one.
	Fail func(err error)
	// Handle is the error handler for the Handle policy (f is a *stage.Failure). Its error is
	// fatal.
	Handle func(ctx context.Context, f error) error
	// Later queues fn to run on the pipeline's error-handling goroutine and returns at once,
	// never blocking the caller: an async sink's Nack runs its error policy there, not on the
	// goroutine that called Nack (a producer's delivery-report reader). fn gets a context
	// derived from Ctx that is also cancelled when the pipeline's close phase gives up; it
	// must end the event references it holds, and return promptly once ctx is done. nil runs
	// fn at once on the caller's goroutine with Ctx.
	Later func(fn func(ctx context.Context))
	// Logger receives the stage's log lines.
	Logger *slog.Logger
	// Stalled returns the current generation of the stall signal: a channel closed the next
	// time the source reports it is blocked while every event in flight waits in a partial
	// batch. A Batch without Linger then flushes. Nil: never.
	Stalled func() <-chan struct{}
	// Tracer, when set, wraps every attempt of every stage call (pipeline's tracing option,
	// internal/ext). Nil: no tracing and no cost beyond one nil check per attempt.
	Tracer Tracer
}

// Tracer observes stage calls (kafka/kotel turns them into OpenTelemetry spans). Call is
// called on the calling goroutine before each attempt of a stage call with the attempt's
// context, the stage's name and kind, and the source events behind the message (one, or a
// batch's members); lives is the worker's buffer, valid only during Call. It returns the
// context the user function gets and a function the engine calls exactly once with the
// attempt's outcome (a recovered panic as its *stage.PanicError), on the same goroutine.
type Tracer interface {
	Call(ctx context.Context, stage, kind string, attempt int, lives []*Life) (context.Context, func(err error))
}

// later runs fn through env.Later, or at once with env.Ctx when the env has none.
func (env *Env) later(fn func(ctx context.Context)) {
	if env.Later == nil {
		fn(env.Ctx)
		return
	}
	env.Later(fn)
}

// The kinds of stage (stage.Kind has the same values).
const (
	KindMap       = "map"
	KindFilter    = "filter"
	KindFlatMap   = "flatmap"
	KindBatch     = "batch"
	KindSink      = "sink"
	KindAsyncSink = "asyncsink"
)

// Stats is a point-in-time snapshot of a stage's counters (see stage.Stats).
type Stats struct {
	Name                                                string
	Kind                                                string
	Concurrency                                         int
	In, Out, Filtered, Errors, Retries, Handled, Panics uint64
	Busy                                                time.Duration
	QueueLen, QueueCap                                  int
	Batched                                             int64
}

type counters struct {
	in, out, filtered, errors, retries, handled, panics atomic.Uint64
	// fast reports that the last timed attempt took less than sampleBelow: calls are then
	// timed one in sampleEvery, and a sink finishes the events of a burst together.
	fast    atomic.Bool
	batched atomic.Int64 // Stats.Batched
	busy    busyClock
}

// Stage is the engine of one typed processing step from In to Out. A Stage runs in one
// pipeline, once.
type Stage[In, Out any] struct {
	name    string
	kind    string
	cfg     Config
	err     error // construction error, reported by the pipeline's Build
	started atomic.Bool
	c       counters
	queue   atomic.Pointer[Edge[In]] // input edge, set by Start
	// start launches the stage's tasks; set by the constructor for its kind.
	start func(s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out]) error
	// fits, for batch stages, is FitsBudget's check.
	fits func(budget, maxEventBytes int64) error
	// w is the call tracking for stall detection (Watch); last, off the counters' cache lines.
	w watch
}

func newStage[In, Out any](name, kind string, cfg Config, err error) *Stage[In, Out] {
	return &Stage[In, Out]{name: name, kind: kind, cfg: cfg, err: err}
}

// Name returns the stage's name, unique within its pipeline.
func (s *Stage[In, Out]) Name() string { return s.name }

// Kind returns what the stage does.
func (s *Stage[In, Out]) Kind() string { return s.kind }

// Err returns the stage's construction error, or nil.
func (s *Stage[In, Out]) Err() error { return s.err }

// Capacity returns the capacity its input edge gets.
func (s *Stage[In, Out]) Capacity() int { return s.cfg.Capacity }

// takesBursts reports whether the stage reads its input from one goroutine (one worker, the
// dispatcher of ordered workers, a batch stage), so that a source may hand it bursts of
// messages (Edge.TakesBursts). Several unordered workers do not take bursts: a burst goes to
// one worker, and a slow or stuck call would hold the rest of it while the others idle.
func (s *Stage[In, Out]) takesBursts() bool { return s.cfg.Concurrency == 1 || !s.cfg.Unordered }

// NewInput returns a new input edge for the stage, of its Capacity, that takes bursts when the
// stage does (see Edge).
func (s *Stage[In, Out]) NewInput() *Edge[In] {
	if s.takesBursts() {
		return newBurstEdge[In](s.cfg.Capacity)
	}
	return NewEdge[In](s.cfg.Capacity)
}

// Concurrency returns how many workers it runs.
func (s *Stage[In, Out]) Concurrency() int { return s.cfg.Concurrency }

// Tasks returns how many pool goroutines the stage occupies while running.
func (s *Stage[In, Out]) Tasks() int {
	if s.cfg.Concurrency > 1 && !s.cfg.Unordered && !s.Terminal() {
		return s.cfg.Concurrency + 2 // dispatcher and collector
	}
	return s.cfg.Concurrency
}

// Terminal reports whether the stage is a sink.
func (s *Stage[In, Out]) Terminal() bool { return s.kind == KindSink || s.kind == KindAsyncSink }

// Stats returns a snapshot of the stage's counters. Safe to call concurrently with Run.
func (s *Stage[In, Out]) Stats() Stats {
	st := Stats{
		Name: s.name, Kind: s.kind, Concurrency: s.cfg.Concurrency,
		In: s.c.in.Load(), Out: s.c.out.Load(), Filtered: s.c.filtered.Load(), Errors: s.c.errors.Load(),
		Retries: s.c.retries.Load(), Handled: s.c.handled.Load(), Panics: s.c.panics.Load(),
		Busy: time.Duration(s.c.busy.total()), QueueCap: s.cfg.Capacity, Batched: s.c.batched.Load(),
	}
	if q := s.queue.Load(); q != nil {
		st.QueueLen = q.Len()
	}
	return st
}

// Start launches the stage's workers on env.Go, reading in and writing out (nil for sinks).
// The stage closes out once all its workers have exited. Called once; it does not block.
func (s *Stage[In, Out]) Start(env *Env, in *Edge[In], out *Edge[Out]) error {
	if s.err != nil {
		return s.err
	}
	if !s.started.CompareAndSwap(false, true) {
		return fmt.Errorf("stage %q: already started (a stage runs in one pipeline, once): %w", s.name, ErrInvalid)
	}
	s.queue.Store(in)
	return s.start(s, env, in, out)
}

// Close runs the stage's close hook (Config.Close), after its workers exited.
func (s *Stage[In, Out]) Close(ctx context.Context) error {
	if s.cfg.Close == nil {
		return nil
	}
	if err := s.cfg.Close(ctx); err != nil {
		return fmt.Errorf("stage %q: close: %w", s.name, err)
	}
	return nil
}

// FitsBudget reports (for a Batch without Linger) whether the batch can fill within the
// in-flight budget; see stage.BatchConfig.
func (s *Stage[In, Out]) FitsBudget(budget, maxEventBytes int64) error {
	if s.fits == nil || s.err != nil {
		return nil
	}
	return s.fits(budget, maxEventBytes)
}
