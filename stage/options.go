package stage

import (
	"errors"
	"fmt"
	"time"
)

// ErrorPolicy says what happens to a message whose processing failed after its retries.
type ErrorPolicy int

const (
	// Handle hands the failed message's source events to the pipeline's error handler (a log
	// line by default, a dead-letter topic with the Kafka sink), then completes them, so a
	// poison message never blocks its partition. The default.
	Handle ErrorPolicy = iota
	// Fail stops the pipeline: Run returns the error and the failed events are not completed
	// (their offsets are not committed; they are consumed again after a restart).
	Fail
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

// Defaults of the stage options.
const (
	DefaultConcurrency = 1
	DefaultCapacity    = 64
	DefaultBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
)

// Option configures a stage.
type Option func(*config)

type config struct {
	concurrency int
	capacity    int
	unordered   bool
	timeout     time.Duration
	retries     int
	backoff     time.Duration
	maxBackoff  time.Duration
	policy      ErrorPolicy
}

func defaults() config {
	return config{
		concurrency: DefaultConcurrency,
		capacity:    DefaultCapacity,
		backoff:     DefaultBackoff,
		maxBackoff:  DefaultMaxBackoff,
	}
}

// Concurrency sets how many messages the stage processes at once (its workers). Default 1.
// Below 1 is a construction error. Each worker is a task on the pipeline's bounded pool.
func Concurrency(n int) Option { return func(c *config) { c.concurrency = n } }

// Capacity sets the capacity of the stage's input edge. Default 64. Below 1 is a construction
// error. A full input blocks the stage before it.
func Capacity(n int) Option { return func(c *config) { c.capacity = n } }

// Unordered lets a stage with Concurrency > 1 emit results as they finish. By default output
// order equals input order (at the cost of a slow message holding back those behind it).
// Sinks are always unordered: completion order does not matter to the offset tracker.
func Unordered() Option { return func(c *config) { c.unordered = true } }

// Timeout bounds each attempt of the stage's function: its context is cancelled after d, and
// the attempt fails with context.DeadlineExceeded unless it returned first. Default 0 (none).
// A function that ignores its context is not interrupted.
func Timeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// Retry retries a failed attempt up to n times, waiting backoff, then twice that, up to
// maxBackoff, between attempts. Default 0 retries, backoff 100ms, maxBackoff 5s. Waiting honours
// the pipeline's hard-stop context. Negative values are construction errors.
func Retry(n int, backoff, maxBackoff time.Duration) Option {
	return func(c *config) { c.retries, c.backoff, c.maxBackoff = n, backoff, maxBackoff }
}

// OnError sets what happens after the retries are exhausted. Default Handle.
func OnError(p ErrorPolicy) Option { return func(c *config) { c.policy = p } }

// ErrInvalid is wrapped by every construction error of a stage.
var ErrInvalid = errors.New("invalid stage configuration")

func (c *config) validate(name string) error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("stage %q: %s %s: %w", name, field, fmt.Sprintf(format, args...), ErrInvalid))
	}
	if name == "" {
		errs = append(errs, fmt.Errorf("stage: Name must not be empty: %w", ErrInvalid))
	}
	if c.concurrency < 1 {
		bad("Concurrency", "must be at least 1, got %d", c.concurrency)
	}
	if c.capacity < 1 {
		bad("Capacity", "must be at least 1, got %d", c.capacity)
	}
	if c.timeout < 0 {
		bad("Timeout", "must not be negative, got %v", c.timeout)
	}
	if c.retries < 0 {
		bad("Retry", "count must not be negative, got %d", c.retries)
	}
	if c.retries > 0 && (c.backoff < 0 || c.maxBackoff < c.backoff) {
		bad("Retry", "backoff must be >= 0 and <= maxBackoff, got %v and %v", c.backoff, c.maxBackoff)
	}
	if c.policy != Handle && c.policy != Fail {
		bad("OnError", "unknown policy %d", int(c.policy))
	}
	return errors.Join(errs...)
}

// backoffFor returns the wait before retry number attempt (1-based).
func (c *config) backoffFor(attempt int) time.Duration {
	d := c.backoff
	for i := 1; i < attempt && d < c.maxBackoff; i++ {
		d *= 2
	}
	return min(d, c.maxBackoff)
}
