package stage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
)

// ErrorPolicy says what happens to a message whose processing failed after its retries.
type ErrorPolicy int

const (
	// Handle hands the failed message's source events to the pipeline's error handler (a log
	// line by default, a dead-letter topic with the Kafka producer's DeadLetter), then
	// completes them, so a poison message never blocks its partition. The default.
	Handle ErrorPolicy = flow.PolicyHandle
	// Fail stops the pipeline: Run returns the error and the failed events are not completed
	// (their offsets are not committed; they are consumed again after a restart).
	Fail ErrorPolicy = flow.PolicyFail
)

func (p ErrorPolicy) String() string {
	switch p {
	case Handle:
		return "handle"
	case Fail:
		return "fail"
	}
	return fmt.Sprintf("ErrorPolicy(%d)", int(p))
}

// Retry is a stage's retry policy (WithRetry): after a failed attempt it waits Backoff, then
// twice as long before each further retry, up to MaxBackoff, for at most Retries retries. The
// zero Retry makes no retry (the default).
type Retry struct {
	Retries    int           // retries after the first attempt; 0: none
	Backoff    time.Duration // wait before the first retry; default 100 ms
	MaxBackoff time.Duration // the longest wait; default 5 s, and never below Backoff
}

// Option configures a stage. Options are applied in order; the last one of a kind wins.
type Option func(*options)

type options struct{ flow.Config }

// WithConcurrency sets how many messages the stage processes at once (its workers). Default
// 1; below 1 is a construction error. pipeline.WithMaxCalls may cap the calls of all stages
// together below the sum of their concurrency.
func WithConcurrency(n int) Option { return func(o *options) { o.Concurrency = n } }

// WithCapacity sets the capacity of the stage's input edge, in messages. Default 64; below 1
// is a construction error. A full input blocks the stage before it.
func WithCapacity(n int) Option { return func(o *options) { o.Capacity = n } }

// WithUnordered lets a stage with Concurrency > 1 emit results as they finish. By default
// output order equals input order (at the cost of a slow message holding back those behind
// it). Sinks are always unordered: completion order does not matter to the offset tracker.
func WithUnordered() Option { return func(o *options) { o.Unordered = true } }

// WithTimeout bounds each attempt of the stage's function: its context is cancelled after d,
// and the attempt fails with context.DeadlineExceeded unless it returned first. Default 0
// (none). A function that ignores its context is not interrupted.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.Timeout = d } }

// WithRetry retries a failed attempt (an error, a panic or a timeout) per r before the error
// policy applies. Default: no retry. A negative Retries or Backoff, or a MaxBackoff below
// Backoff, is a construction error naming the field.
func WithRetry(r Retry) Option {
	return func(o *options) {
		o.Retries, o.Backoff, o.MaxBackoff = r.Retries, r.Backoff, r.MaxBackoff
		if o.Backoff == 0 {
			o.Backoff = defaultBackoff
		}
		if o.MaxBackoff == 0 {
			o.MaxBackoff = max(defaultMaxBackoff, o.Backoff)
		}
	}
}

// WithErrorPolicy sets what happens to a message that failed after its retries. Default
// Handle.
func WithErrorPolicy(p ErrorPolicy) Option { return func(o *options) { o.Policy = int(p) } }

// WithClose sets a hook that runs once at shutdown, after the stage's workers exited and
// before the source's final commit, with the pipeline's close deadline: a sink flushes there
// (an AsyncSink's hook must end every outstanding Done before it returns). Its error stops Run
// with an error. Only sinks take it; on another stage it is a construction error.
func WithClose(fn func(ctx context.Context) error) Option {
	return func(o *options) { o.Close = fn }
}

const (
	defaultCapacity   = 64
	defaultBackoff    = 100 * time.Millisecond
	defaultMaxBackoff = 5 * time.Second
)

// configure applies opts over the defaults and validates them for a stage of kind, naming the
// stage and the option in every error (each wraps pipeline.ErrInvalid).
func configure(name string, kind Kind, opts []Option) (flow.Config, error) {
	o := options{flow.Config{Concurrency: 1, Capacity: defaultCapacity, Backoff: defaultBackoff, MaxBackoff: defaultMaxBackoff}}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	c := o.Config
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("stage %q: %s %s: %w", name, field, fmt.Sprintf(format, args...), flow.ErrInvalid))
	}
	if name == "" {
		errs = append(errs, fmt.Errorf("stage: name must not be empty: %w", flow.ErrInvalid))
	}
	if c.Concurrency < 1 {
		bad("WithConcurrency", "must be at least 1, got %d", c.Concurrency)
	}
	if c.Capacity < 1 {
		bad("WithCapacity", "must be at least 1, got %d", c.Capacity)
	}
	if c.Timeout < 0 {
		bad("WithTimeout", "must not be negative, got %v", c.Timeout)
	}
	if c.Retries < 0 {
		bad("Retry.Retries", "must not be negative, got %d", c.Retries)
	}
	if c.Backoff < 0 || c.MaxBackoff < c.Backoff {
		bad("Retry.Backoff", "must be >= 0 and <= MaxBackoff, got %v and %v", c.Backoff, c.MaxBackoff)
	}
	if c.Policy != flow.PolicyHandle && c.Policy != flow.PolicyFail {
		bad("WithErrorPolicy", "unknown policy %d", c.Policy)
	}
	if c.Close != nil && kind != KindSink && kind != KindAsyncSink {
		bad("WithClose", "is for sinks, not a %s stage", kind)
	}
	return c, errors.Join(errs...)
}
