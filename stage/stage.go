// Package stage defines sluice's typed processing steps (Map, Filter, FlatMap, Batch, Sink,
// AsyncSink), their options, and the pooled source Event.
//
// A stage is a description until the pipeline starts it: its workers read the stage's
// fixed-capacity input edge, call the user function (with per-attempt timeout,
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
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
)

// None is the output type of terminal stages (sinks).
type None struct{}

// Kind names what a stage does.
type Kind string

// The kinds of stage.
const (
	KindMap       Kind = flow.KindMap
	KindFilter    Kind = flow.KindFilter
	KindFlatMap   Kind = flow.KindFlatMap
	KindBatch     Kind = flow.KindBatch
	KindSink      Kind = flow.KindSink
	KindAsyncSink Kind = flow.KindAsyncSink
)

// ErrNotDelivered marks a failure that means "the output record was not written": a sink's
// delivery failed for good (kafka.Producer's sink wraps it into every failed delivery report
// and every error of a synchronous produce). Such a failure must not be skipped, or the input
// would be committed without its output: the pipeline's default error handler stops Run with
// it (the input is not committed and is consumed again after a restart), and so does the Fail
// policy. An error handler that returns nil for it takes responsibility for the record, as
// kafka.Producer.DeadLetter does by writing it to the dead-letter topic first. Test with
// errors.Is.
var ErrNotDelivered = errors.New("sluice: output record not delivered")

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
	In          uint64        // messages taken from the input edge (a burst counts when it is taken, before its messages are handled)
	Out         uint64        // messages written to the output edge (or finished, for sinks, counted with the completions of a burst)
	Filtered    uint64        // messages a Filter dropped (finished without output)
	Errors      uint64        // attempts that failed (each retry counts)
	Retries     uint64        // retries made
	Handled     uint64        // messages handed to the error handler
	Panics      uint64        // panics recovered
	Busy        time.Duration // total time spent in the user function, over all workers, calls still running included
	QueueLen    int           // messages waiting on the input edge now
	QueueCap    int           // capacity of the input edge, in messages
	Batched     int64         // source events waiting in a Batch stage's partial batch (a batch of batches counts the events behind it)
}

// Stage is a typed processing step from In to Out. Build one with Map, Filter, FlatMap,
// Batch, Sink or AsyncSink and link it with the pipeline package (pipeline.Then, pipeline.To).
// A Stage runs in one pipeline, once.
type Stage[In, Out any] struct {
	c *flow.Stage[In, Out]
}

func (s *Stage[In, Out]) core() any { return s.c }

// Name returns the stage's name, unique within its pipeline.
func (s *Stage[In, Out]) Name() string { return s.c.Name() }

// Stats returns a snapshot of the stage's counters. Safe to call concurrently with Run.
func (s *Stage[In, Out]) Stats() Stats { return statsOf(s.c.Stats()) }

func statsOf(f flow.Stats) Stats {
	return Stats{Name: f.Name, Kind: Kind(f.Kind), Concurrency: f.Concurrency, In: f.In, Out: f.Out,
		Filtered: f.Filtered, Errors: f.Errors, Retries: f.Retries, Handled: f.Handled, Panics: f.Panics,
		Busy: f.Busy, QueueLen: f.QueueLen, QueueCap: f.QueueCap, Batched: f.Batched}
}
