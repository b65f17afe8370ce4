package faulttest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Fourth round of adversarial probes of issue 12, written from the README as a user would.

// userBug is user code stuck in a call that ignores its context: it blocks until the test
// releases it (at its end, so that no goroutine is left).
type userBug struct {
	entered chan struct{} // closed when the first call is stuck
	once    sync.Once
	release chan struct{}
	calls   atomic.Int64
}

func newUserBug() *userBug {
	return &userBug{entered: make(chan struct{}), release: make(chan struct{})}
}

// block is the stuck call: the first one blocks (ignoring ctx) until release.
func (u *userBug) block() {
	if u.calls.Add(1) != 1 {
		return
	}
	u.once.Do(func() { close(u.entered) })
	<-u.release
}

// TestFaultAttack4ShutdownBoundUserCodeIgnoresContext: README "Graceful shutdown that never
// hangs": "Run returns within drain + 2 × close timeout, and no goroutine outlives it, with one
// exception that librdkafka imposes". Each case is user code that ignores its context (a bug,
// but an ordinary one): Run's context is cancelled while it is stuck, and Run must return
// within drain + 2 × close timeout (plus slack), or the README must say that it does not.
func TestFaultAttack4ShutdownBoundUserCodeIgnoresContext(t *testing.T) {
	const drain, closeT = 500 * time.Millisecond, 500 * time.Millisecond
	errPoison := errors.New("poison")
	cases := []struct {
		name    string
		handler bool // the error handler is the stuck call
		wire    func(b *pipeline.Builder, u *userBug)
	}{
		{"sink call ignores ctx", false, func(b *pipeline.Builder, u *userBug) {
			pipeline.To(b.Source(), stage.Sink("sink", func(context.Context, *stage.Event) error { u.block(); return nil }))
		}},
		{"Map Timeout shorter than a call that ignores ctx", false, func(b *pipeline.Builder, u *userBug) {
			out := pipeline.Then(b.Source(), stage.Map("slow", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
				u.block()
				return ev, nil
			}, stage.Timeout(100*time.Millisecond)))
			pipeline.To(out, stage.Sink("sink", func(context.Context, *stage.Event) error { return nil }))
		}},
		{"error handler on a worker ignores ctx", true, func(b *pipeline.Builder, u *userBug) {
			pipeline.To(b.Source(), stage.Sink("sink", func(context.Context, *stage.Event) error { return errPoison }))
		}},
		{"error handler after a Nack ignores ctx", true, func(b *pipeline.Builder, u *userBug) {
			pipeline.To(b.Source(), stage.AsyncSink("async", func(_ context.Context, _ *stage.Event, d stage.Done) error {
				d.Nack(errPoison)
				return nil
			}, nil))
		}},
		{"async sink never ends Done, no close hook", false, func(b *pipeline.Builder, u *userBug) {
			pipeline.To(b.Source(), stage.AsyncSink("async", func(context.Context, *stage.Event, stage.Done) error {
				u.once.Do(func() { close(u.entered) })
				return nil
			}, nil))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
			cl := kafkatest.StartT(t, kafkatest.Topic("in", 1))
			produce(t, cl.Addr(), "in", "v", 50)
			src := attackSource(t, cl.Addr(), nil)
			u := newUserBug()
			opts := append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()),
				pipeline.WithDrainTimeout(drain), pipeline.WithCloseTimeout(closeT))
			if c.handler {
				opts = append(opts, pipeline.WithErrorHandler(func(context.Context, *stage.Failure) error { u.block(); return nil }))
			}
			b := pipeline.New(src, opts...)
			c.wire(b, u)
			p, err := b.Build()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			released := false
			defer func() {
				if !released {
					close(u.release)
				}
				cancel()
			}()
			select {
			case <-u.entered:
			case <-time.After(30 * time.Second):
				t.Fatal("the user code was never called")
			}
			cancel()
			began := time.Now()
			bound := drain + 2*closeT
			select {
			case err := <-done:
				t.Logf("Run returned after %v (bound %v): %v", time.Since(began).Round(time.Millisecond), bound, err)
				if took := time.Since(began); took > bound+time.Second {
					t.Errorf("Run took %v, want within drain + 2 × close (%v)", took, bound)
				}
			case <-time.After(bound + 3*time.Second):
				t.Errorf("Run has not returned %v after cancel (drain + 2 × close = %v): it waits for user code that ignores its context, an exception the README does not state", time.Since(began).Round(time.Millisecond), bound)
				close(u.release)
				released = true
				select {
				case err := <-done:
					t.Logf("Run returned once the user code was released: %v", err)
				case <-time.After(30 * time.Second):
					t.Fatal("Run did not return even after the user code was released")
				}
			}
		})
	}
}
