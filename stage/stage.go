// Package stage defines sluice's typed processing steps (Map, Filter, FlatMap, Batch, Sink,
// AsyncSink), the pooled source Event, and the fixed-capacity Edge that links two stages.
//
// A stage is a description until the pipeline starts it: its workers run on the pipeline's
// bounded worker pool, read the input edge, call the user function (with per-attempt timeout,
// retries with backoff and panic recovery), and write the output edge. A full output edge
// blocks the workers, which stop reading their input, which fills and blocks the stage before:
// that chain is how a slow stage slows the source.
//
// Every message carries one reference to the source event(s) it derives from. A stage ends
// that reference exactly once: by passing it on, by dropping it (Filter), by splitting it
// (FlatMap), by joining it to a batch (Batch), or by finishing (Sink). When the last reference
// of an event ends, the pipeline is told, and the source may commit it.
package stage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// None is the output type of terminal stages (sinks).
type None struct{}

// Kind names what a stage does.
type Kind string

// The kinds of stage.
const (
	KindMap       Kind = "map"
	KindFilter    Kind = "filter"
	KindFlatMap   Kind = "flatmap"
	KindBatch     Kind = "batch"
	KindSink      Kind = "sink"
	KindAsyncSink Kind = "asyncsink"
)

// errAborted ends messages abandoned by a hard stop: their events are not completed ok.
var errAborted = errors.New("sluice: abandoned by hard stop")

// errFailedLineage ends the members of a batch that failed fatally.
var errFailedLineage = errors.New("sluice: derived message failed")

// ErrNotDelivered marks a failure that means "the output record was not written": a sink's
// delivery failed for good (kafka.Producer's sink wraps it into every failed delivery report
// and every error of a synchronous produce). Such a failure must not be skipped, or the input
// would be committed without its output: the pipeline's default error handler stops Run with
// it (the input is not committed and is consumed again after a restart), and so does the Fail
// policy. An error handler that returns nil for it takes responsibility for the record, as
// kafka.Producer.DeadLetter does by writing it to the dead-letter topic first. Test with
// errors.Is.
var ErrNotDelivered = errors.New("sluice: output record not delivered")

// Env is what a running stage gets from its pipeline. The pipeline builds it; stages never do.
type Env struct {
	// Ctx is the hard-stop context: cancelled on a fatal error or when the drain timeout
	// expires, never merely because Run's context was cancelled (in-flight work then drains).
	Ctx context.Context
	// Go runs a long-lived task on the pipeline's bounded worker pool.
	Go func(task func()) error
	// Fail records a fatal error; the pipeline stops hard and Run returns the first one.
	Fail func(err error)
	// Handle is the error handler for the Handle policy. Its error is fatal.
	Handle func(ctx context.Context, f *Failure) error
	// Later queues fn to run on the pipeline's error-handling goroutine and returns at once,
	// never blocking the caller: an async sink's Nack runs its error policy there, not on the
	// goroutine that called Nack (a producer's delivery-report reader). fn gets a context
	// derived from Ctx that is also cancelled when the pipeline's close phase gives up; it
	// must end the event references it holds, and return promptly once ctx is done. nil runs
	// fn at once on the caller's goroutine with Ctx (for stages driven without a pipeline).
	Later func(fn func(ctx context.Context))
	// Logger receives the stage's log lines.
	Logger *slog.Logger
	// Stalled returns the current generation of the stall signal: a channel closed the next
	// time the source reports it is blocked while every event in flight waits in a partial
	// batch (pipeline.Emitter.Stalled). A Batch without Linger then flushes. Nil: never.
	Stalled func() <-chan struct{}
}

// later runs fn through env.Later, or at once with env.Ctx when the env has none.
func (env *Env) later(fn func(ctx context.Context)) {
	if env.Later == nil {
		fn(env.Ctx)
		return
	}
	env.Later(fn)
}

// Failure describes a message that failed after its retries, as given to the error handler.
// Events are the source events behind the message; they are valid until the handler returns
// and must not be retained. A Failure that stops the pipeline (Run's error) has no Events:
// they finished and were recycled; its Error still names the record (see NewFailure).
type Failure struct {
	Stage    string
	Err      error
	Attempts int
	Events   []*Event
	at       failedAt // what Error reports, copied from Events by NewFailure
}

// failedAt is the part of a Failure's events that its Error reports, copied (not pointed to)
// so that it stays true after the events were recycled for other records.
type failedAt struct {
	set       bool
	events    int
	topic     string
	partition int32
	offset    int64
}

func failedAtOf(evs []*Event) failedAt {
	at := failedAt{set: true, events: len(evs)}
	if len(evs) == 1 { // where the record came from, not what a stage made of its fields
		if o := evs[0].Origin(); o != (Origin{}) {
			at.topic, at.partition, at.offset = o.Topic, o.Partition, o.Offset
		} else { // never emitted (a Failure built by hand)
			at.topic, at.partition, at.offset = evs[0].Topic, evs[0].Partition, evs[0].Offset
		}
	}
	return at
}

// NewFailure returns a Failure of the named stage for events, with a copy of what its Error
// reports (the topic, partition and offset of a single event, or the number of events): a
// Failure kept after its events finished (Run's error, a log line formatted later) still names
// the right record. A Failure built as a literal reads Events when Error is called, which is
// only right until its events finish.
func NewFailure(stage string, err error, attempts int, events []*Event) *Failure {
	return &Failure{Stage: stage, Err: err, Attempts: attempts, Events: events, at: failedAtOf(events)}
}

// detached returns a copy of f without its Events (they are about to finish and be
// recycled) that keeps what Error reports: the form in which a Failure reaches Env.Fail.
func (f *Failure) detached(err error) *Failure {
	return &Failure{Stage: f.Stage, Err: err, Attempts: f.Attempts, at: f.where()}
}

// where returns what Error reports: the copy NewFailure took, or (a Failure built as a literal)
// read from Events now.
func (f *Failure) where() failedAt {
	if f.at.set {
		return f.at
	}
	return failedAtOf(f.Events)
}

func (f *Failure) Error() string {
	at := f.where()
	if at.events == 1 && at.topic != "" {
		return fmt.Sprintf("stage %q: %s[%d]@%d: %v", f.Stage, at.topic, at.partition, at.offset, f.Err)
	}
	return fmt.Sprintf("stage %q: %d event(s): %v", f.Stage, at.events, f.Err)
}

func (f *Failure) Unwrap() error { return f.Err }

// PanicError is a panic recovered from user code in a stage, with its stack. The process lives;
// the panic is handled like any error of the stage (its error policy applies).
type PanicError struct {
	Stage string
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("stage %q: panic: %v\n%s", e.Stage, e.Value, e.Stack)
}

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

// Stats is a point-in-time snapshot of a stage's counters.
type Stats struct {
	Name        string
	Kind        Kind
	Concurrency int
	In          uint64        // messages taken from the input edge
	Out         uint64        // messages written to the output edge (or finished, for sinks)
	Filtered    uint64        // messages a Filter dropped (finished without output)
	Errors      uint64        // attempts that failed (each retry counts)
	Retries     uint64        // retries made
	Handled     uint64        // messages handed to the error handler
	Panics      uint64        // panics recovered
	Busy        time.Duration // total time spent in the user function, over all workers, calls still running included
	QueueLen    int           // messages waiting on the input edge now (see Edge.Len)
	QueueCap    int           // capacity of the input edge, in messages (see Edge.Cap)
	Batched     int64         // source events waiting in a Batch stage's partial batch (a batch of batches counts the events behind it)
}

type counters struct {
	in, out, filtered, errors, retries, handled, panics atomic.Uint64
	fast                                                atomic.Bool  // the last timed attempt took less than sampleBelow
	batched                                             atomic.Int64 // Stats.Batched
	busy                                                busyClock
}

// Stage is a typed processing step from In to Out. Build one with Map, Filter, FlatMap,
// Batch, Sink or AsyncSink and link it with the pipeline package. A Stage runs in one
// pipeline, once.
type Stage[In, Out any] struct {
	name    string
	kind    Kind
	cfg     config
	err     error // construction error, reported by the pipeline's Build
	started atomic.Bool
	c       counters
	queue   atomic.Pointer[Edge[In]] // input edge, set by Start
	// start launches the stage's tasks; set by the constructor for its kind.
	start func(s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out]) error
	// closeFn, for async sinks, is called after the workers exited; it must end every
	// outstanding Done before it returns.
	closeFn func(ctx context.Context) error
	// fits, for batch stages, is FitsBudget's check.
	fits func(budget, maxEventBytes int64) error
}

func newStage[In, Out any](name string, kind Kind, opts []Option) *Stage[In, Out] {
	s := &Stage[In, Out]{name: name, kind: kind, cfg: defaults()}
	for _, o := range opts {
		o(&s.cfg)
	}
	s.err = s.cfg.validate(name)
	return s
}

// Name returns the stage's name, unique within its pipeline.
func (s *Stage[In, Out]) Name() string { return s.name }

// Kind returns what the stage does.
func (s *Stage[In, Out]) Kind() Kind { return s.kind }

// Err returns the stage's construction error, or nil.
func (s *Stage[In, Out]) Err() error { return s.err }

// Capacity returns the capacity its input edge gets.
func (s *Stage[In, Out]) Capacity() int { return s.cfg.capacity }

// takesRuns reports whether the stage reads its input from one goroutine (one worker, the
// dispatcher of ordered workers, a batch stage), so that a source may hand it runs of messages
// (stage.Edge.TakesRuns). Several unordered workers do not take runs: a run goes to one
// worker, and a slow or stuck call would hold the rest of it while the others idle.
func (s *Stage[In, Out]) takesRuns() bool { return s.cfg.concurrency == 1 || !s.cfg.unordered }

// NewInput returns a new input edge for the stage, of its Capacity, that takes runs when the
// stage does (see Edge). The pipeline links stages with it.
func (s *Stage[In, Out]) NewInput() *Edge[In] {
	if s.takesRuns() {
		return newRunEdge[In](s.cfg.capacity)
	}
	return NewEdge[In](s.cfg.capacity)
}

// Concurrency returns how many workers it runs.
func (s *Stage[In, Out]) Concurrency() int { return s.cfg.concurrency }

// Tasks returns how many pool tasks the stage occupies while running.
func (s *Stage[In, Out]) Tasks() int {
	if s.cfg.concurrency > 1 && !s.cfg.unordered && s.kind != KindSink && s.kind != KindAsyncSink {
		return s.cfg.concurrency + 2 // dispatcher and collector
	}
	return s.cfg.concurrency
}

// Terminal reports whether the stage is a sink.
func (s *Stage[In, Out]) Terminal() bool { return s.kind == KindSink || s.kind == KindAsyncSink }

// Stats returns a snapshot of the stage's counters. Safe to call concurrently with Run.
func (s *Stage[In, Out]) Stats() Stats {
	st := Stats{
		Name: s.name, Kind: s.kind, Concurrency: s.cfg.concurrency,
		In: s.c.in.Load(), Out: s.c.out.Load(), Filtered: s.c.filtered.Load(), Errors: s.c.errors.Load(),
		Retries: s.c.retries.Load(), Handled: s.c.handled.Load(), Panics: s.c.panics.Load(),
		Busy: time.Duration(s.c.busy.total()), QueueCap: s.cfg.capacity, Batched: s.c.batched.Load(),
	}
	if q := s.queue.Load(); q != nil {
		st.QueueLen = q.Len()
	}
	return st
}

// Start launches the stage's workers on env.Go, reading in and writing out (nil for sinks).
// The stage closes out once all its workers have exited. Start is called by the pipeline,
// once; it does not block.
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

// Close runs the stage's close hook (async sinks: flush and end every outstanding Done).
func (s *Stage[In, Out]) Close(ctx context.Context) error {
	if s.closeFn == nil {
		return nil
	}
	if err := s.closeFn(ctx); err != nil {
		return fmt.Errorf("stage %q: close: %w", s.name, err)
	}
	return nil
}
