package pipeline_test

// Adversarial tests for API v1 (issue 13), public API only: WithMaxCalls under hostile user
// code, close hooks (WithClose), panics from user code the engine calls outside a stage's
// function, and construction errors.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// runBounded runs p with ctx and returns Run's error and how long it took, failing the test if
// Run has not returned after limit (then release lets the user code go, and Run is awaited).
// A panic out of Run is returned as an error instead of killing the test binary.
func runBounded(t *testing.T, ctx context.Context, p *pipeline.Pipeline, limit time.Duration, release func()) (error, time.Duration) {
	t.Helper()
	errc := make(chan error, 1)
	began := time.Now()
	go func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("PANIC OUT OF RUN: %v", r)
			}
		}()
		errc <- p.Run(ctx)
	}()
	select {
	case err := <-errc:
		return err, time.Since(began)
	case <-time.After(limit):
		release()
		err := <-errc
		t.Fatalf("Run did not return within %v (it returned %v after the user code was released)", limit, err)
		return err, 0
	}
}

// awaitNoLeak waits (polling, a generous deadline) until no goroutine beyond leaks is left.
func awaitNoLeak(t *testing.T, leaks goleak.Option) {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	for goleak.Find(leaks) != nil && time.Now().Before(end) {
		time.Sleep(20 * time.Millisecond) // poll interval: goroutines have no signal of their own
	}
	if err := goleak.Find(leaks); err != nil {
		t.Fatal(err)
	}
}

// completedOnce checks that offsets 0..n-1 each completed exactly once (ok or not).
func (c *completions) completedOnce(t *testing.T, n int64) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range n {
		if c.ok[i]+c.bad[i] != 1 {
			t.Fatalf("offset %d completed ok %d times, not ok %d times; want exactly once", i, c.ok[i], c.bad[i])
		}
	}
}

// atMostOnce checks that no offset completed more than once.
func (c *completions) atMostOnce(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for off, k := range c.ok {
		if k+c.bad[off] > 1 {
			t.Fatalf("offset %d completed ok %d times, not ok %d times", off, k, c.bad[off])
		}
	}
	for off, k := range c.bad {
		if k > 1 {
			t.Fatalf("offset %d completed not ok %d times", off, k)
		}
	}
}

// TestAttack13MaxCallsStuckCallUnderCapOne: under WithMaxCalls(1) one Map call ignores its
// context and never returns, while the other workers of every stage wait for the only pool
// slot. README (Graceful shutdown): Run returns within drain + 2 × close with an error saying
// calls are still running; the stuck event is not committed; the waiting calls are abandoned;
// once the call returns no goroutine is left.
func TestAttack13MaxCallsStuckCallUnderCapOne(t *testing.T) {
	const drain, closeT = 100 * time.Millisecond, 300 * time.Millisecond
	leaks := goleak.IgnoreCurrent()
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	entered := make(chan struct{}, 1)
	src := sized(200, 5)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithMaxCalls(1),
		pipeline.WithDrainTimeout(drain), pipeline.WithCloseTimeout(closeT))
	s := pipeline.Then(b.Source(), stage.Map("stuck", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
		if ev.Offset == 3 {
			entered <- struct{}{}
			<-release // ignores ctx
		}
		return ev, nil
	}, stage.WithConcurrency(4), stage.WithUnordered()))
	pipeline.To(s, stage.Sink("sink", func(context.Context, *stage.Event) error { return nil }, stage.WithConcurrency(4)))
	p := build(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-entered; cancel() }()
	err, took := runBounded(t, ctx, p, 10*time.Second, free)
	t.Logf("Run returned after %v: %v", took, err)
	if err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Run = %v, want an error saying stage calls are still running", err)
	}
	if bound := drain + 2*closeT + time.Second; took > bound {
		t.Fatalf("Run took %v, want within drain + 2 × close (+1 s slack) = %v", took, bound)
	}
	done.mu.Lock()
	ok3 := done.ok[3]
	done.mu.Unlock()
	if ok3 != 0 {
		t.Fatal("the stuck call's event was completed ok")
	}
	free()
	awaitNoLeak(t, leaks)
}

// TestAttack13MaxCallsPanickingErrorHandlerUnderCap: under a binding cap the error handler runs
// on the call pool. A handler that panics must be recovered as a *stage.PanicError naming the
// stage's error handler: Run returns it promptly, the process lives, the failed event is not
// committed, and every event completes exactly once.
func TestAttack13MaxCallsPanickingErrorHandlerUnderCap(t *testing.T) {
	const n = 100
	src := sized(n, 5)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithMaxCalls(1), pipeline.WithCloseTimeout(2*time.Second),
		pipeline.WithErrorHandler(func(context.Context, *stage.Failure) error { panic("handler boom") }))
	s := pipeline.Then(b.Source(), stage.Map("fails", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
		if ev.Offset == 5 {
			return nil, errors.New("fails") // a plain error: the only panic is the handler's
		}
		return ev, nil
	}, stage.WithConcurrency(3)))
	pipeline.To(s, stage.Sink("sink", func(context.Context, *stage.Event) error { return nil }, stage.WithConcurrency(3)))
	err, took := runBounded(t, context.Background(), build(t, b), 10*time.Second, func() {})
	var pe *stage.PanicError
	if !errors.As(err, &pe) || !strings.Contains(pe.Stage, "error handler") || fmt.Sprint(pe.Value) != "handler boom" {
		t.Fatalf("Run = %v (after %v), want a *stage.PanicError of the error handler", err, took)
	}
	done.atMostOnce(t)
	done.mu.Lock()
	ok5 := done.ok[5]
	done.mu.Unlock()
	if ok5 != 0 {
		t.Fatal("the event whose handler panicked was completed ok")
	}
}

// TestAttack13MaxCallsAsyncSinkBatchFlatMapUnderCapOne: every stage kind under WithMaxCalls(1)
// with capacity-1 edges: a Batch (count and linger), a FlatMap that splits each batch back into
// its members and fans each out 20 times, and an AsyncSink that ends every Done from another
// goroutine. Every event completes ok exactly once, at most one user call runs at once
// (measured inside the calls), and the async sink saw 20 outputs per event.
func TestAttack13MaxCallsAsyncSinkBatchFlatMapUnderCapOne(t *testing.T) {
	const n, fan = 300, 20
	var m callMeter
	src := sized(n, 5)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithMaxCalls(1))
	batches := pipeline.Then(b.Source(), stage.Batch("batch", stage.BatchConfig[*stage.Event]{MaxCount: 7, Linger: 2 * time.Millisecond}, stage.WithCapacity(1)))
	outs := pipeline.Then(batches, stage.FlatMap("fan", func(_ context.Context, evs []*stage.Event) ([]int64, error) {
		m.call(0)
		var out []int64
		for _, ev := range evs {
			for range fan {
				out = append(out, ev.Offset)
			}
		}
		return out, nil
	}, stage.WithConcurrency(3), stage.WithCapacity(1)))
	var mu sync.Mutex
	got := map[int64]int{}
	var acks sync.WaitGroup
	pipeline.To(outs, stage.AsyncSink("async", func(_ context.Context, off int64, d stage.Done) error {
		m.call(0)
		mu.Lock()
		got[off]++
		mu.Unlock()
		acks.Add(1)
		go func() { defer acks.Done(); d.Ack() }()
		return nil
	}, stage.WithConcurrency(4), stage.WithCapacity(1)))
	err, _ := runBounded(t, context.Background(), build(t, b), 30*time.Second, func() {})
	acks.Wait()
	if err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	if most := m.most.Load(); most != 1 {
		t.Fatalf("%d calls ran at once under WithMaxCalls(1)", most)
	}
	for i := range int64(n) {
		if got[i] != fan {
			t.Fatalf("offset %d reached the async sink %d times, want %d", i, got[i], fan)
		}
	}
}

// TestAttack13MaxCallsRetryBackoffThenCancel: under WithMaxCalls(1) a call that keeps failing
// holds the only pool worker through its retries' backoff (documented), stalling the other
// stages. Cancelling Run must still drain within the drain timeout, stop hard, and return
// without an error about stuck calls (the backoff honours the hard stop): the retrying event is
// not committed, and every event completes exactly once.
func TestAttack13MaxCallsRetryBackoffThenCancel(t *testing.T) {
	const n = 50
	src := sized(n, 5)
	done := track(src)
	entered := make(chan struct{}, 1)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithMaxCalls(1),
		pipeline.WithDrainTimeout(200*time.Millisecond), pipeline.WithCloseTimeout(2*time.Second))
	s := pipeline.Then(b.Source(), stage.Map("retrying", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
		if ev.Offset == 2 {
			select {
			case entered <- struct{}{}:
			default:
			}
			return nil, errors.New("transient")
		}
		return ev, nil
	}, stage.WithConcurrency(2), stage.WithRetry(stage.Retry{Retries: 1000, Backoff: 20 * time.Millisecond, MaxBackoff: time.Second})))
	pipeline.To(s, stage.Sink("sink", func(context.Context, *stage.Event) error { return nil }, stage.WithConcurrency(2)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-entered; cancel() }()
	p := build(t, b)
	err, took := runBounded(t, ctx, p, 10*time.Second, cancel)
	if err != nil {
		t.Fatalf("Run = %v after %v, want nil (a drain timeout is not an error)", err, took)
	}
	// The source stops at the cancel: the events it emitted (offsets 0 to Emitted-1, in
	// order) each complete exactly once.
	done.completedOnce(t, int64(p.Stats().Emitted))
	done.mu.Lock()
	ok2 := done.ok[2]
	done.mu.Unlock()
	if ok2 != 0 {
		t.Fatal("the event still retrying at the hard stop was completed ok")
	}
}

// TestAttack13MaxCallsOneWithConcurrencyOneEverywhere: WithMaxCalls(1) on a pipeline whose
// stages all have Concurrency 1 behaves as without the cap: output order equals input order,
// every event completes ok once, and a single-stage pipeline (total concurrency 1) is not
// slowed by any pool.
func TestAttack13MaxCallsOneWithConcurrencyOneEverywhere(t *testing.T) {
	const n = 2000
	for _, stages := range []int{1, 3} {
		t.Run(fmt.Sprint(stages, "-stages"), func(t *testing.T) {
			src := pipeline.Generate(n, func(i int64, ev *stage.Event) {})
			done := track(src)
			b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithMaxCalls(1))
			s := b.Source()
			for i := range stages - 1 {
				s = pipeline.Then(s, stage.Map(fmt.Sprint("m", i), func(_ context.Context, ev *stage.Event) (*stage.Event, error) { return ev, nil }))
			}
			var order []int64 // one sink worker
			pipeline.To(s, stage.Sink("sink", func(_ context.Context, ev *stage.Event) error {
				order = append(order, ev.Offset)
				return nil
			}))
			if err, _ := runBounded(t, context.Background(), build(t, b), 30*time.Second, func() {}); err != nil {
				t.Fatal(err)
			}
			done.allOKOnce(t, n)
			for i, off := range order {
				if off != int64(i) {
					t.Fatalf("output %d is offset %d: order lost", i, off)
				}
			}
		})
	}
}

// TestAttack13CloseHookIgnoringContextBoundsRun: a sink's WithClose hook is user code the
// pipeline runs with the close deadline. Run's doc: "after a hard stop it waits for stage
// calls, error handlers and close hooks at most the close timeout"; README: Run returns within
// drain + 2 × close "even when user code ignores its context". A hook that ignores its context
// must not hold Run forever.
func TestAttack13CloseHookIgnoringContextBoundsRun(t *testing.T) {
	const closeT = 300 * time.Millisecond
	leaks := goleak.IgnoreCurrent()
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	src := sized(10, 5)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithDrainTimeout(100*time.Millisecond), pipeline.WithCloseTimeout(closeT))
	pipeline.To(b.Source(), stage.Sink("flushes", func(context.Context, *stage.Event) error { return nil },
		stage.WithClose(func(context.Context) error { <-release; return nil }))) // ignores ctx
	err, took := runBounded(t, context.Background(), build(t, b), 5*time.Second, free)
	t.Logf("Run returned after %v: %v", took, err)
	if err == nil {
		t.Fatal("Run = nil, want an error: the close hook never returned")
	}
	free()
	awaitNoLeak(t, leaks)
}

// TestAttack13CloseHookPanicIsAPanicError: a panic in a sink's WithClose hook is user code
// panicking, like a panic in its function: it must come back from Run as a *stage.PanicError
// (README: "every recovered panic is a *stage.PanicError"), not escape Run and kill the
// process.
func TestAttack13CloseHookPanicIsAPanicError(t *testing.T) {
	src := sized(10, 5)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithCloseTimeout(time.Second))
	pipeline.To(b.Source(), stage.Sink("flushes", func(context.Context, *stage.Event) error { return nil },
		stage.WithClose(func(context.Context) error { panic("close boom") })))
	err, _ := runBounded(t, context.Background(), build(t, b), 10*time.Second, func() {})
	var pe *stage.PanicError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "flushes") {
		t.Fatalf("Run = %v, want a *stage.PanicError naming the stage", err)
	}
	done.allOKOnce(t, 10)
}

// TestAttack13BatchSizePanicEndsEveryEvent: BatchConfig.Size is user code. When it panics, the
// panic must be a *stage.PanicError from Run, every source event must still complete exactly
// once (Guarantees: exactly-once completion; the batch's members are not committed), Run must
// return within drain + 2 × close, and no goroutine may outlive Run (the stage before the
// batch must not stay blocked on the batch's input).
func TestAttack13BatchSizePanicEndsEveryEvent(t *testing.T) {
	const n, closeT = 200, 300 * time.Millisecond
	leaks := goleak.IgnoreCurrent()
	src := sized(n, 5)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithDrainTimeout(100*time.Millisecond), pipeline.WithCloseTimeout(closeT))
	var calls atomic.Int64
	m := pipeline.Then(b.Source(), stage.Map("pass", func(_ context.Context, ev *stage.Event) (*stage.Event, error) { return ev, nil }, stage.WithCapacity(1)))
	batches := pipeline.Then(m, stage.Batch("batch", stage.BatchConfig[*stage.Event]{MaxCount: 10, Linger: time.Millisecond,
		Size: func(*stage.Event) int64 {
			if calls.Add(1) == 25 {
				panic("size boom")
			}
			return 1
		}}, stage.WithCapacity(1)))
	pipeline.To(batches, stage.Sink("sink", func(context.Context, []*stage.Event) error { return nil }))
	p := build(t, b)
	err, took := runBounded(t, context.Background(), p, 10*time.Second, func() {})
	t.Logf("Run returned after %v: %v", took, err)
	var pe *stage.PanicError
	if !errors.As(err, &pe) || fmt.Sprint(pe.Value) != "size boom" {
		t.Fatalf("Run = %v, want the Size panic as a *stage.PanicError", err)
	}
	if bound := 100*time.Millisecond + 2*closeT + time.Second; took > bound {
		t.Errorf("Run took %v, want within drain + 2 × close (+1 s) = %v", took, bound)
	}
	st := p.Stats()
	ok, bad := src.Completed()
	if st.InFlightEvents != 0 || ok+bad != st.Emitted {
		t.Errorf("after Run: %d events emitted, %d completed ok + %d not ok, %d still in flight: the events of the partial batch never completed (Guarantees: every source event finishes exactly once)",
			st.Emitted, ok, bad, st.InFlightEvents)
	}
	done.atMostOnce(t)
	awaitNoLeak(t, leaks)
}

// TestAttack13ConstructionErrors: every construction error wraps pipeline.ErrInvalid and names
// its field or the rule: Then twice on one stream (streams are linear), WithClose on a Map (it
// is for sinks), a nil pipeline option (stage options ignore nil: one convention).
func TestAttack13ConstructionErrors(t *testing.T) {
	t.Run("then-twice", func(t *testing.T) {
		b := pipeline.New(sized(1, 1))
		a := pipeline.Then(b.Source(), mapOf("a"))
		pipeline.Then(b.Source(), mapOf("b")) // the source's stream a second time
		pipeline.To(a, sinkOf[int64]("s"))
		_, err := b.Build()
		if !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), "already consumed") {
			t.Fatalf("Build = %v, want ErrInvalid naming the stream already consumed", err)
		}
	})
	t.Run("withclose-on-map", func(t *testing.T) {
		b := pipeline.New(sized(1, 1))
		a := pipeline.Then(b.Source(), mapOf("a", stage.WithClose(func(context.Context) error { return nil })))
		pipeline.To(a, sinkOf[int64]("s"))
		_, err := b.Build()
		if !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), "WithClose") || !strings.Contains(err.Error(), `"a"`) {
			t.Fatalf("Build = %v, want ErrInvalid naming WithClose and the stage", err)
		}
	})
	t.Run("withclose-error-fails-run", func(t *testing.T) {
		b := pipeline.New(sized(3, 1), pipeline.WithLogger(quiet))
		boom := errors.New("flush failed")
		pipeline.To(b.Source(), sinkOf[*stage.Event]("s", stage.WithClose(func(context.Context) error { return boom })))
		if err := build(t, b).Run(context.Background()); !errors.Is(err, boom) || !strings.Contains(err.Error(), `"s"`) {
			t.Fatalf("Run = %v, want the close hook's error naming the stage", err)
		}
	})
	t.Run("nil-pipeline-option", func(t *testing.T) {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("pipeline.New panicked on a nil Option (stage options ignore nil): %v", r)
			}
		}()
		b := pipeline.New(sized(1, 1), nil, pipeline.WithLogger(quiet))
		pipeline.To(b.Source(), sinkOf[*stage.Event]("s"))
		if p, err := b.Build(); err == nil {
			if err := p.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
		} else if !errors.Is(err, pipeline.ErrInvalid) {
			t.Fatalf("Build = %v, want nil or ErrInvalid", err)
		}
	})
}

// TestAttack13SourceCompletePanicIsAPanicError: a source whose Complete panics (user code,
// called on a stage worker) stops Run with a *stage.PanicError naming it; the pipeline still
// finishes its own bookkeeping of every event (nothing stays in flight) and Run returns.
func TestAttack13SourceCompletePanicIsAPanicError(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	src := sized(100, 5)
	src.OnComplete = func(ev *stage.Event, _ bool) {
		if ev.Offset == 3 {
			panic("complete boom")
		}
	}
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithDrainTimeout(100*time.Millisecond), pipeline.WithCloseTimeout(300*time.Millisecond))
	pipeline.To(b.Source(), stage.Sink("sink", func(context.Context, *stage.Event) error { return nil }, stage.WithConcurrency(2)))
	p := build(t, b)
	err, _ := runBounded(t, context.Background(), p, 10*time.Second, func() {})
	var pe *stage.PanicError
	if !errors.As(err, &pe) || fmt.Sprint(pe.Value) != "complete boom" || pe.Stage != "source Complete" {
		t.Fatalf("Run = %v, want the Complete panic as a *stage.PanicError", err)
	}
	if st := p.Stats(); st.InFlightEvents != 0 || st.InFlightBytes != 0 {
		t.Fatalf("after Run: %d events (%d bytes) still in flight", st.InFlightEvents, st.InFlightBytes)
	}
	awaitNoLeak(t, leaks)
}
