package pipeline_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// signalSource wraps a source and closes exited when its Run has returned.
type signalSource struct {
	*pipeline.MemSource
	exited chan struct{}
}

func (s *signalSource) Run(ctx context.Context, emit *pipeline.Emitter) error {
	defer close(s.exited)
	return s.MemSource.Run(ctx, emit)
}

func TestCancelDrainsEveryEmittedEvent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const n = 10
	ch := make(chan []byte, n)
	for range n {
		ch <- []byte("x")
	}
	mem := pipeline.FromChannel(ch) // never closed: only the cancel ends the source
	done := track(mem)
	src := &signalSource{MemSource: mem, exited: make(chan struct{})}
	g := newGate()
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	nums := pipeline.Then(b.Source(), stage.Map("offset", offsetOf))
	pipeline.To(nums, stage.Sink("slow", g.pass, stage.WithConcurrency(2)))
	p := build(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := start(t, ctx, p, g.open)

	g.awaitEntries(t, 2)
	waitFor(t, "all values emitted", func() bool { return p.Stats().Emitted == n })
	cancel()
	<-src.exited // the source stopped; the stages still hold every event
	if st := p.Stats(); st.Completed != 0 || st.InFlightEvents != n {
		t.Fatalf("before the sink was released: completed %d, in flight %d", st.Completed, st.InFlightEvents)
	}
	g.open()
	if err := wait(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	done.allOKOnce(t, n)
	if st := p.Stats(); st.InFlightBytes != 0 || st.Failed != 0 {
		t.Fatalf("after the drain: %+v", st)
	}
}

// An endless source cancelled mid-stream: every event that entered the pipeline is drained
// and completes ok. Only the event the source was emitting at the cancel may complete not ok
// (Emit's contract), and that one never reached a stage.
func TestCancelDrainsEndlessSource(t *testing.T) {
	src := sized(-1, 8)
	done := track(src)
	var (
		mu   sync.Mutex
		seen = map[int64]bool{}
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	nums := pipeline.Then(b.Source(), stage.Map("offset", func(_ context.Context, ev *stage.Event) (int64, error) {
		mu.Lock()
		seen[ev.Offset] = true
		mu.Unlock()
		return ev.Offset, nil
	}, stage.WithConcurrency(4)))
	var sunk int
	pipeline.To(nums, stage.Sink("sink", func(context.Context, int64) error {
		if sunk++; sunk == 200 { // one worker: no lock needed
			cancel()
		}
		runtime.Gosched() // let the queues fill, so the drain has work to finish
		return nil
	}))
	p := build(t, b)
	if err := p.Run(ctx); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	mu.Lock()
	defer mu.Unlock()
	done.mu.Lock()
	defer done.mu.Unlock()
	for off := range seen {
		if done.ok[off] != 1 || done.bad[off] != 0 {
			t.Fatalf("offset %d reached a stage but completed ok %d, not ok %d times", off, done.ok[off], done.bad[off])
		}
	}
	for off := range done.bad {
		if seen[off] {
			t.Fatalf("offset %d reached a stage and was not drained", off)
		}
	}
	st := p.Stats()
	if len(done.bad) > 1 || st.Failed > 1 || sunk != len(seen) || st.Completed != uint64(len(seen)) {
		t.Fatalf("seen %d, sunk %d, not ok %d: %+v", len(seen), sunk, len(done.bad), st)
	}
	if st.InFlightBytes != 0 || st.InFlightEvents != 0 || st.Emitted != st.Completed+st.Failed {
		t.Fatalf("after the drain: %+v", st)
	}
}

// A stage that only its context can end, and a short drain timeout: the pipeline stops hard,
// Run returns nil, the unfinished events complete not ok, and the budget is whole again.
func TestDrainTimeoutStopsHard(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const n = 20
	src := sized(n, 5)
	done := track(src)
	var handled int
	entered := make(chan struct{}, n)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithDrainTimeout(10*time.Millisecond),
		pipeline.WithErrorHandler(func(context.Context, *stage.Failure) error { handled++; return nil }))
	stuck := pipeline.Then(b.Source(), stage.Map("stuck", func(ctx context.Context, ev *stage.Event) (int64, error) {
		entered <- struct{}{}
		<-ctx.Done() // honours the hard-stop context, nothing else
		return 0, ctx.Err()
	}, stage.WithCapacity(4)))
	pipeline.To(stuck, stage.Sink("sink", func(context.Context, int64) error { return nil }))
	p := build(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, p, cancel)

	<-entered
	waitFor(t, "the stuck stage's queue full", func() bool { return stageStats(t, p.Stats(), "stuck").QueueLen == 4 })
	cancel()
	if err := wait(); err != nil {
		t.Fatalf("Run after a hard stop = %v, want nil", err)
	}
	st := p.Stats()
	if st.InFlightBytes != 0 || st.InFlightEvents != 0 {
		t.Fatalf("after the hard stop: %d bytes, %d events in flight", st.InFlightBytes, st.InFlightEvents)
	}
	if st.Completed != 0 || st.Failed != st.Emitted || st.Emitted < 5 {
		t.Fatalf("completed %d, failed %d of %d emitted; want every emitted event not ok", st.Completed, st.Failed, st.Emitted)
	}
	done.mu.Lock()
	defer done.mu.Unlock()
	if len(done.ok) != 0 || uint64(len(done.bad)) != st.Emitted || done.bad[0] != 1 {
		t.Fatalf("completions ok %v, not ok %v", done.ok, done.bad)
	}
	if handled != 0 {
		t.Fatalf("the error handler got %d abandoned events; a hard stop must not dead-letter", handled)
	}
}

// TestRunReturnsDespiteACallThatIgnoresItsContext: a stage function that ignores its context
// and never returns (a user bug) cannot hold Run: after the drain timeout's hard stop Run waits
// at most the close timeout for the workers, then returns an error saying calls are still
// running; the close phase shares that timeout, so Run returns within drain + 2 × close. The
// stuck call's event is not committed. When the call finally returns, its goroutine ends.
func TestRunReturnsDespiteACallThatIgnoresItsContext(t *testing.T) {
	const drain, closeT = 100 * time.Millisecond, 300 * time.Millisecond
	leaks := goleak.IgnoreCurrent()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	src := sized(10, 5)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithDrainTimeout(drain), pipeline.WithCloseTimeout(closeT))
	pipeline.To(b.Source(), stage.Sink("ignores-ctx", func(_ context.Context, ev *stage.Event) error {
		if ev.Offset == 3 {
			entered <- struct{}{}
			<-release // ignores ctx
		}
		return nil
	}))
	p := build(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, p, func() { cancel() })
	<-entered
	cancel()
	began := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- wait() }()
	var err error
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		close(release) // let the test end
		t.Fatal("Run did not return within 10 s of the cancel: a call that ignores its context holds it")
	}
	took := time.Since(began)
	t.Logf("Run returned after %v: %v", took, err)
	if err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Run = %v, want an error saying stage calls are still running", err)
	}
	if bound := drain + 2*closeT + 500*time.Millisecond; took > bound {
		t.Fatalf("Run returned after %v, want within drain + 2 × close (+ slack) = %v", took, bound)
	}
	done.mu.Lock()
	ok3 := done.ok[3]
	done.mu.Unlock()
	if ok3 != 0 {
		t.Fatal("the stuck call's event was completed ok")
	}
	close(release) // the call returns: its worker ends
	kafkaWait := time.Now().Add(5 * time.Second)
	for goleak.Find(leaks) != nil && time.Now().Before(kafkaWait) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := goleak.Find(leaks); err != nil {
		t.Fatal(err)
	}
}
