package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/stage"
)

// Defaults of the pipeline options.
const (
	DefaultInFlightBudget = 64 << 20 // 64 MiB (WithBudget)
	DefaultInitialWindow  = 2 << 20  // 2 MiB (WithInitialWindow)
	DefaultMaxEventBytes  = 1 << 20  // 1 MiB, Kafka's default max message size
	DefaultDrainTimeout   = 30 * time.Second
	DefaultCloseTimeout   = 10 * time.Second
)

// Option configures a pipeline.
type Option func(*config)

type config struct {
	budget        int64
	window        int64 // the in-flight window's start (WithInitialWindow)
	maxEventBytes int64
	size          func(*stage.Event) int64
	drainTimeout  time.Duration
	closeTimeout  time.Duration
	onError       func(ctx context.Context, f *stage.Failure) error
	logger        *slog.Logger
	name          string
	maxCalls      int
	tracer        flow.Tracer // set through internal/ext (kafka/kotel); nil: no tracing
}

func defaultConfig() config {
	return config{
		budget:        DefaultInFlightBudget,
		window:        DefaultInitialWindow,
		maxEventBytes: DefaultMaxEventBytes,
		size:          EventSize,
		drainTimeout:  DefaultDrainTimeout,
		closeTimeout:  DefaultCloseTimeout,
		logger:        slog.Default(),
		name:          "sluice",
	}
}

// Per-event and per-header overheads that EventSize adds to a record's bytes.
const (
	// EventOverhead is the heap one source event costs beyond its record's bytes: the pooled
	// stage.Event and, for the Kafka source, its message and bookkeeping (the offset tracker
	// entry, the key table slot), with room for the bookkeeping slices' growth. The README's
	// memory formula gives the measured figures and the command.
	EventOverhead = 512

	// HeaderOverhead is the heap one header costs beyond its name and value: its entry in the
	// event's and the message's header slices and the rounding of its name's allocation.
	HeaderOverhead = 64
)

// EventSize is the default size function: what an event holds on the heap, as the byte budget
// counts it: the record's bytes (key, value, header names and values) plus EventOverhead plus
// HeaderOverhead per header, so records with empty values or many headers count what they cost.
func EventSize(ev *stage.Event) int64 {
	n := len(ev.Key) + len(ev.Value)
	for i := range ev.Headers {
		n += len(ev.Headers[i].Key) + len(ev.Headers[i].Value)
	}
	return int64(n) + EventOverhead + HeaderOverhead*int64(len(ev.Headers))
}

// WithBudget sets the pipeline's in-flight budget: the most bytes (by the size function,
// default EventSize) of source events in flight at once, from emission to completion. Default
// DefaultInFlightBudget (64 MiB). The Kafka source sets it for you: it is the B/2 share of
// kafka.Config.Budget (the whole budget, which also covers what the source holds back,
// librdkafka's prefetch and the producer queue). It must be at least
// MaxEventBytes, or Build fails. When the budget is exhausted the source waits (the Kafka source
// pauses its partitions). The budget is a cap: events are admitted up to the in-flight window
// (WithInitialWindow), which grows toward the budget only when the stages are starved.
func WithBudget(bytes int64) Option { return func(c *config) { c.budget = bytes } }

// WithInitialWindow sets where the in-flight window starts. The budget (WithBudget) is a cap,
// not a working set: the pipeline admits source events up to a window, which starts at this
// many bytes and grows (at least doubling, up to the budget; it never shrinks) each time the
// source is held back by it while the stages are starved: nothing waits on any stage's input
// edge, so every event in flight is in a call, a partial batch or a pending delivery, and a
// worker that finishes would find no work. The bytes in flight thus follow what the bottleneck
// needs (its workers busy, a queue in front of them) instead of filling the budget: in the
// README's seed scenario (a 10-worker sink of 20 ms calls, 40 KiB records) about 50 events, a
// queue of 80 ms of work for the source's pauses, instead of the 74 the edges would hold; with
// larger records, or more workers, the difference grows. Default DefaultInitialWindow (2 MiB);
// 0 or the budget or more: no window, the whole budget from the start (as before this option).
func WithInitialWindow(bytes int64) Option { return func(c *config) { c.window = bytes } }

// WithMaxEventBytes sets the largest event the pipeline expects. Default 1 MiB. An event larger
// than the whole budget cannot be admitted: it goes to the error handler with ErrTooLarge
// (never a deadlock).
func WithMaxEventBytes(n int64) Option { return func(c *config) { c.maxEventBytes = n } }

// WithSize sets the function that gives an event's budget bytes. Default EventSize (record bytes,
// headers included, plus a fixed per-event and per-header overhead). The Kafka source counts the messages it holds back as EventSize does,
// whatever this is set to.
func WithSize(fn func(*stage.Event) int64) Option { return func(c *config) { c.size = fn } }

// WithDrainTimeout bounds the drain after Run's context is cancelled: in-flight events may
// finish for that long, then the pipeline stops hard (unfinished events are not committed and
// are consumed again later). Default 30s.
func WithDrainTimeout(d time.Duration) Option { return func(c *config) { c.drainTimeout = d } }

// WithCloseTimeout bounds the close phase after the drain: the error handlers still queued,
// the async sinks' close hooks (the producer's flush) and the wait for every event to finish
// share one close timeout; when it expires, the error handlers still running get a cancelled
// context and their events are not committed. The source's final commit and close then get
// one close timeout of their own. Default 10s.
func WithCloseTimeout(d time.Duration) Option { return func(c *config) { c.closeTimeout = d } }

// WithErrorHandler sets the handler of failed messages under the stage.Handle policy (a
// dead-letter producer, for example). It gets the failure and the source events behind it; a
// nil return completes those events (they count as processed and are committed); an error is
// fatal and stops the pipeline.
//
// A failure wrapping stage.ErrNotDelivered means a sink's output record was not written: a
// handler that returns nil for it takes responsibility for that record (kafka's DeadLetter
// writes it to the dead-letter topic first); returning nil without doing so loses it.
//
// The handler runs on the failing stage's worker (blocking there is backpressure) or, for an
// async sink's Nack and an oversized event, on the pipeline's error-handling goroutine, one
// failure at a time. Either way it must return once ctx is done: ctx is cancelled on a hard
// stop and when the close phase gives up (see WithCloseTimeout), and Run waits for it.
//
// Default: log the failure at Error level and return nil, except for a failure wrapping
// stage.ErrNotDelivered: it returns an error, so Run stops with an error naming the record and
// the record's input is not committed (it is consumed again after a restart).
func WithErrorHandler(fn func(ctx context.Context, f *stage.Failure) error) Option {
	return func(c *config) { c.onError = fn }
}

// WithMaxCalls caps the stage calls running at once across all stages. With a cap below the
// sum of the stages' WithConcurrency, every call (with its retries and, when it fails, its
// error handler) runs on the pipeline's one bounded pool (ants) of n workers; a stage worker
// holds a pool worker only while its call runs, never while it waits for input or for room on
// a full edge, so any cap of at least 1 slows a pipeline down but never deadlocks it. The
// hand-over costs a goroutine switch per call (README, Core overhead). Default 0: no cap
// beyond the sum, the most that could run anyway, and calls run on their stage's workers.
// Below 0 is a construction error.
func WithMaxCalls(n int) Option { return func(c *config) { c.maxCalls = n } }

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithName names the pipeline in logs and errors. Default "sluice".
func WithName(name string) Option { return func(c *config) { c.name = name } }

func (c *config) validate() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("pipeline %q: %s %s: %w", c.name, field, fmt.Sprintf(format, args...), ErrInvalid))
	}
	if c.maxEventBytes < 1 {
		bad("WithMaxEventBytes", "must be at least 1, got %d", c.maxEventBytes)
	}
	if c.budget < c.maxEventBytes {
		bad("WithBudget", "must hold at least one event of MaxEventBytes (%d), got %d", c.maxEventBytes, c.budget)
	}
	if c.size == nil {
		bad("WithSize", "must not be nil")
	}
	if c.drainTimeout < 0 {
		bad("WithDrainTimeout", "must not be negative, got %v", c.drainTimeout)
	}
	if c.closeTimeout <= 0 {
		bad("WithCloseTimeout", "must be positive, got %v", c.closeTimeout)
	}
	if c.window < 0 {
		bad("WithInitialWindow", "must not be negative, got %d", c.window)
	}
	if c.maxCalls < 0 {
		bad("WithMaxCalls", "must not be negative, got %d", c.maxCalls)
	}
	if c.logger == nil {
		bad("WithLogger", "must not be nil")
	}
	return errs
}
