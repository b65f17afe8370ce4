package stage

import (
	"context"
	"errors"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
)

// Map returns a 1→1 stage: each input becomes fn's output.
func Map[In, Out any](name string, fn func(ctx context.Context, in In) (Out, error), opts ...Option) *Stage[In, Out] {
	cfg, err := configure(name, KindMap, opts)
	return &Stage[In, Out]{flow.NewMap(name, cfg, err, fn)}
}

// Filter returns a stage that passes on the inputs for which keep returns true. A dropped
// input is finished (its event completes, and is committed, as processed).
func Filter[T any](name string, keep func(ctx context.Context, in T) (bool, error), opts ...Option) *Stage[T, T] {
	cfg, err := configure(name, KindFilter, opts)
	return &Stage[T, T]{flow.NewFilter(name, cfg, err, keep)}
}

// FlatMap returns a 1→N stage: each input becomes the elements of fn's result, emitted in
// order once fn succeeded (a retry never emits twice). An empty result finishes the input.
// The input's event completes when all N outputs have completed.
func FlatMap[In, Out any](name string, fn func(ctx context.Context, in In) ([]Out, error), opts ...Option) *Stage[In, Out] {
	cfg, err := configure(name, KindFlatMap, opts)
	return &Stage[In, Out]{flow.NewFlatMap(name, cfg, err, fn)}
}

// Sink returns a terminal stage: fn consumes each input; its success finishes the input.
// Sinks run WithConcurrency workers and are always unordered. WithClose sets a hook that runs
// once after the workers exited, at shutdown.
func Sink[In any](name string, fn func(ctx context.Context, in In) error, opts ...Option) *Stage[In, None] {
	cfg, err := configure(name, KindSink, opts)
	return &Stage[In, None]{flow.NewSink[In, None](name, cfg, err, fn)}
}

// Done finishes one message of an AsyncSink. It is a small value: copy it freely, but call
// exactly one of Ack, Nack, Abandon or Fail, once. A second call is detected
// (pool.DoubleReleases, a panic in debug mode) and ignored.
type Done struct {
	t   *flow.Ticket
	gen uint64
}

// Ack finishes the message successfully.
func (d Done) Ack() { d.t.End(d.gen, nil) }

// Nack finishes the message with err, which goes through the stage's error policy (no
// retries: an async sink retries on its own, as librdkafka does). It never blocks: the policy
// (the error handler, a dead-letter producer for instance) runs later on the pipeline's
// error-handling goroutine, so Nack may be called from any goroutine, including
// one the handler waits on (a producer's delivery-report reader). The message's events stay
// in flight, not committed, until the handler returned. Wrap stage.ErrNotDelivered into err
// when the sink's output was not written.
func (d Done) Nack(err error) {
	if err == nil {
		err = errNackNil
	}
	d.t.End(d.gen, err)
}

// Abandon finishes the message as not done, without the error handler: its events are not
// committed and will be consumed again (for a send that was purged at shutdown).
func (d Done) Abandon() { d.t.End(d.gen, flow.ErrAborted) }

// Fail finishes the message as not done and stops the pipeline with err, whatever the stage's
// error policy: for a failure that no retry, dead letter or skip may paper over (a producer
// that librdkafka declared fatal fails every later record too; skipping them would commit
// records that were never written). The events are not committed and are consumed again after
// a restart.
func (d Done) Fail(err error) {
	if err == nil {
		err = errNackNil
	}
	d.t.End(d.gen, flow.Fatal{Err: err})
}

// errNackNil replaces a nil error given to Nack or Fail.
var errNackNil = errors.New("sluice: Nack(nil)")

// AsyncSink returns a terminal stage whose fn hands each input to something that finishes
// later (a producer awaiting its delivery report) and calls done.Ack or done.Nack then. If fn
// returns an error it has not taken ownership: the error policy applies (with retries) and
// done must not be used. Set WithClose to flush at shutdown: the hook runs once after the
// workers exited and must end every outstanding Done before it returns.
func AsyncSink[In any](name string, fn func(ctx context.Context, in In, done Done) error, opts ...Option) *Stage[In, None] {
	cfg, err := configure(name, KindAsyncSink, opts)
	call := func(ctx context.Context, in In, t *flow.Ticket, gen uint64) error {
		return fn(ctx, in, Done{t: t, gen: gen})
	}
	return &Stage[In, None]{flow.NewAsyncSink[In, None](name, cfg, err, call)}
}

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

// Batch returns a stage that groups consecutive inputs into slices, in input order, flushed
// per bc. The slice is newly allocated per batch and belongs to the next stage. The events
// behind a batch complete when the batch (and whatever derives from it) completes. A batch
// stage runs one worker; WithConcurrency other than 1 is a construction error.
func Batch[T any](name string, bc BatchConfig[T], opts ...Option) *Stage[T, []T] {
	cfg, err := configure(name, KindBatch, opts)
	return &Stage[T, []T]{flow.NewBatch(name, cfg, err, flow.BatchConfig[T](bc))}
}
