package stage_test

// Adversarial tests for API v1 (issue 13), public API only: one construction-error convention
// for every stage option, one PanicError, and an async sink's close hook that ends its
// outstanding Dones (Nack, Abandon) under a call cap.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestAttack13StageOptionErrorsWrapErrInvalidAndNameTheField: every invalid stage option is a
// Build error wrapping pipeline.ErrInvalid that names the stage and the option or field.
func TestAttack13StageOptionErrorsWrapErrInvalidAndNameTheField(t *testing.T) {
	nop := func(context.Context) error { return nil }
	mapWith := func(opts ...stage.Option) func(b *pipeline.Builder) {
		return func(b *pipeline.Builder) {
			pipeline.To(pipeline.Then(b.Source(), stage.Map("st", offsetOf, opts...)), stage.Sink("end", func(context.Context, int64) error { return nil }))
		}
	}
	for _, c := range []struct {
		name  string
		wire  func(b *pipeline.Builder)
		field string
	}{
		{"concurrency", mapWith(stage.WithConcurrency(0)), "WithConcurrency"},
		{"capacity", mapWith(stage.WithCapacity(-3)), "WithCapacity"},
		{"timeout", mapWith(stage.WithTimeout(-time.Second)), "WithTimeout"},
		{"retries", mapWith(stage.WithRetry(stage.Retry{Retries: -1})), "Retry.Retries"},
		{"backoff", mapWith(stage.WithRetry(stage.Retry{Retries: 1, Backoff: -time.Second})), "Retry.Backoff"},
		{"maxbackoff", mapWith(stage.WithRetry(stage.Retry{Retries: 1, Backoff: 2 * time.Second, MaxBackoff: time.Second})), "Backoff"},
		{"policy", mapWith(stage.WithErrorPolicy(stage.ErrorPolicy(7))), "WithErrorPolicy"},
		{"close on map", mapWith(stage.WithClose(nop)), "WithClose"},
		{"close on filter", func(b *pipeline.Builder) {
			f := pipeline.Then(b.Source(), stage.Filter("st", func(context.Context, *stage.Event) (bool, error) { return true, nil }, stage.WithClose(nop)))
			pipeline.To(f, stage.Sink("end", func(context.Context, *stage.Event) error { return nil }))
		}, "WithClose"},
		{"close on batch", func(b *pipeline.Builder) {
			f := pipeline.Then(b.Source(), stage.Batch("st", stage.BatchConfig[*stage.Event]{MaxCount: 2, Linger: time.Millisecond}, stage.WithClose(nop)))
			pipeline.To(f, stage.Sink("end", func(context.Context, []*stage.Event) error { return nil }))
		}, "WithClose"},
		{"batch concurrency", func(b *pipeline.Builder) {
			f := pipeline.Then(b.Source(), stage.Batch("st", stage.BatchConfig[*stage.Event]{MaxCount: 2, Linger: time.Millisecond}, stage.WithConcurrency(2)))
			pipeline.To(f, stage.Sink("end", func(context.Context, []*stage.Event) error { return nil }))
		}, "WithConcurrency"},
		{"batch limits", func(b *pipeline.Builder) {
			f := pipeline.Then(b.Source(), stage.Batch("st", stage.BatchConfig[*stage.Event]{Linger: time.Millisecond}))
			pipeline.To(f, stage.Sink("end", func(context.Context, []*stage.Event) error { return nil }))
		}, "MaxCount"},
		{"batch negative", func(b *pipeline.Builder) {
			f := pipeline.Then(b.Source(), stage.Batch("st", stage.BatchConfig[*stage.Event]{MaxCount: -1, Linger: time.Millisecond}))
			pipeline.To(f, stage.Sink("end", func(context.Context, []*stage.Event) error { return nil }))
		}, "MaxCount"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := pipeline.New(offsets(1), pipeline.WithLogger(quiet))
			c.wire(b)
			_, err := b.Build()
			if !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), `"st"`) {
				t.Fatalf("Build = %v, want pipeline.ErrInvalid naming %s and stage \"st\"", err, c.field)
			}
		})
	}
}

var errSentinel = errors.New("sentinel")

// TestAttack13PanicWithAnErrorUnwrapsUnderACap: a stage function that panics with an error
// value under the Fail policy, on the call pool of a binding WithMaxCalls: Run's error is a
// *stage.PanicError naming the stage, and errors.Is sees the panic's error through it.
func TestAttack13PanicWithAnErrorUnwrapsUnderACap(t *testing.T) {
	src := offsets(50)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithMaxCalls(1))
	m := pipeline.Then(b.Source(), stage.Map("boom", func(_ context.Context, ev *stage.Event) (int64, error) {
		if ev.Offset == 7 {
			panic(errSentinel)
		}
		return ev.Offset, nil
	}, stage.WithErrorPolicy(stage.Fail), stage.WithConcurrency(2)))
	pipeline.To(m, stage.Sink("end", func(context.Context, int64) error { return nil }, stage.WithConcurrency(2)))
	err := build(t, b).Run(context.Background())
	var pe *stage.PanicError
	if !errors.As(err, &pe) || pe.Stage != "boom" || !errors.Is(err, errSentinel) {
		t.Fatalf("Run = %v, want a *stage.PanicError of stage \"boom\" wrapping the sentinel", err)
	}
	done.mu.Lock()
	defer done.mu.Unlock()
	if done.ok[7] != 0 {
		t.Fatal("the panicking event was completed ok under the Fail policy")
	}
}

// TestAttack13AsyncCloseHookEndsOutstandingDones: an async sink keeps every Done and ends them
// only in its close hook at shutdown: the even ones Nacked (through the error handler, which
// takes them: ok), the odd ones Abandoned (not ok). Under a binding WithMaxCalls, every event
// completes exactly once with that outcome, each Nack reaches the handler once, and Run
// returns nil.
func TestAttack13AsyncCloseHookEndsOutstandingDones(t *testing.T) {
	const n = 40
	src := offsets(n)
	done := track(src)
	var fs failures
	var mu sync.Mutex
	var kept []struct {
		off int64
		d   stage.Done
	}
	all := make(chan struct{})
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithErrorHandler(fs.handle), pipeline.WithMaxCalls(1),
		pipeline.WithCloseTimeout(5*time.Second))
	m := pipeline.Then(b.Source(), stage.Map("off", offsetOf, stage.WithConcurrency(2)))
	pipeline.To(m, stage.AsyncSink("hold", func(_ context.Context, off int64, d stage.Done) error {
		mu.Lock()
		kept = append(kept, struct {
			off int64
			d   stage.Done
		}{off, d})
		if len(kept) == n {
			close(all)
		}
		mu.Unlock()
		return nil
	}, stage.WithConcurrency(3), stage.WithClose(func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range kept {
			if k.off%2 == 0 {
				k.d.Nack(errors.New("late"))
			} else {
				k.d.Abandon()
			}
		}
		return nil
	})))
	p := build(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-all; cancel() }()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	var odd []int64
	for i := int64(1); i < n; i += 2 {
		odd = append(odd, i)
	}
	done.exactlyOnceOK(t, n, odd...)
	if got := len(fs.all()); got != n/2 {
		t.Fatalf("the error handler got %d failures, want %d", got, n/2)
	}
}
