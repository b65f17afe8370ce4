// Package handover is how a polling source (the Kafka source) hands bursts of polled records
// to a pipeline beyond pipeline.Emitter's public Emit: bursts in one edge operation, bounded
// waits, the budget's state and the stall signal. Package pipeline provides it (Of); users
// never see it.
package handover

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/stage"
)

// MaxBurst is the most events TryEmitBurst takes at once.
const MaxBurst = flow.MaxBurst

// Emitter is a pipeline's emitter as a polling source sees it. Its methods are called from the
// source's Run goroutine only.
type Emitter interface {
	// TryEmitBurst emits the first events of evs (at most MaxBurst) that the budget (within its
	// in-flight window) and the first edge admit within wait (0: now only), in order, and
	// returns how many. The caller still owns the rest.
	TryEmitBurst(ctx context.Context, evs []*stage.Event, wait time.Duration) int
	// TryEmitWait emits ev if the budget (within its in-flight window) and the first edge admit
	// it within wait; an event
	// larger than the whole budget goes to the error handler (reported as emitted).
	TryEmitWait(ctx context.Context, ev *stage.Event, wait time.Duration) bool
	// Stalled tells the pipeline the source is blocked: a Batch without Linger holding every
	// event in flight then flushes.
	Stalled()
	// Size returns ev's budget bytes (the pipeline's size function).
	Size(ev *stage.Event) int64
	// Limit returns the in-flight budget; InFlightBytes what is held of it now.
	Limit() int64
	InFlightBytes() int64
}

// Of returns the Emitter behind a *pipeline.Emitter; set by package pipeline's init.
var Of func(emit any) Emitter
