package flow

import (
	"context"

	"github.com/sluicehq/sluice/internal/workers"
)

// Calls runs the user calls of a pipeline's stages on one bounded pool, so that at most its
// Size run at once across all stages. A stage worker hands each call over and waits for it:
// it holds a slot only while its call runs, never while it waits for room on a full edge or
// for its input, so a cap below the stages' total Concurrency slows the pipeline but never
// deadlocks it.
type Calls struct {
	w *workers.Workers
}

// NewCalls returns a pool for n calls at once; onPanic receives a panic that escaped a call's
// own recovery (an engine bug).
func NewCalls(n int, onPanic func(*workers.PanicError)) (*Calls, error) {
	w, err := workers.NewWorkers(workers.Size(n), workers.OnPanic(onPanic))
	if err != nil {
		return nil, err
	}
	return &Calls{w: w}, nil
}

// Close releases the pool's goroutines, waiting for running calls until ctx is done. A nil
// *Calls has nothing to close.
func (c *Calls) Close(ctx context.Context) error {
	if c == nil {
		return nil
	}
	return c.w.Close(ctx)
}

// Running reports how many calls run now.
func (c *Calls) Running() int { return c.w.Running() }

// do runs fn on the pool and waits for it, or reports ctx's error when no slot freed before
// ctx was done (fn did not run). w's channel carries the end of the call.
func (c *Calls) do(ctx context.Context, w *worker, fn func()) error {
	if w.called == nil {
		w.called = make(chan struct{}, 1)
	}
	called := w.called
	if err := c.w.Submit(ctx, func() {
		defer func() { called <- struct{}{} }()
		fn()
	}); err != nil {
		return err
	}
	<-called
	return nil
}
