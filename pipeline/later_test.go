package pipeline_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestOversizedEventHandlerRunsOffTheSourceOneAtATime: an oversized event's error handler runs
// on the pipeline's error-handling goroutine, so the source keeps going (a polling source keeps
// polling) while the handler waits; meanwhile a second oversized event is refused (TryEmit
// false, the source keeps it), and a blocking Emit of it waits until the first was handled.
func TestOversizedEventHandlerRunsOffTheSourceOneAtATime(t *testing.T) {
	release := make(chan struct{})
	var handled []int64 // appended by the handler, on the error-handling goroutine only
	src := &funcSource{run: func(ctx context.Context, emit *pipeline.Emitter) error {
		if !emit.TryEmit(ctx, newEvent(0, "0123456789ab")) {
			t.Error("TryEmit of the first oversized event = false")
		}
		if !emit.TryEmit(ctx, newEvent(1, "ok")) {
			t.Error("TryEmit of a small event while an oversized one is being handled = false")
		}
		second := newEvent(2, "0123456789ab")
		if emit.TryEmit(ctx, second) {
			t.Error("TryEmit of a second oversized event while the first is being handled = true")
		}
		close(release) // the source was not blocked by the handler: let it finish
		return emit.Emit(ctx, second)
	}}
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithBudget(10), pipeline.WithMaxEventBytes(10), pipeline.WithSize(payloadSize),
		pipeline.WithErrorHandler(func(_ context.Context, f *stage.Failure) error {
			if !errors.Is(f.Err, pipeline.ErrTooLarge) {
				return f
			}
			select {
			case <-release:
			case <-time.After(5 * time.Second):
				return errors.New("the source was blocked while the oversized event's handler ran")
			}
			handled = append(handled, f.Events[0].Offset)
			return nil
		}))
	pipeline.To(b.Source(), stage.Sink("s", func(context.Context, *stage.Event) error { return nil }))
	p := build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(handled) != 2 || handled[0] != 0 || handled[1] != 2 {
		t.Fatalf("handled %v, want the oversized offsets 0 then 2", handled)
	}
	if len(src.complete) != 3 || !src.complete[0] || !src.complete[1] || !src.complete[2] {
		t.Fatalf("completions %v, want offsets 0-2 ok", src.complete)
	}
	if st := p.Stats(); st.TooLarge != 2 || st.InFlightBytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}
