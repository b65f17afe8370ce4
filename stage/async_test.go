package stage_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// acker finishes Done values on its own goroutine, as a producer's delivery-report loop does.
// Its close hook ends the goroutine after every pending Done was finished.
type acker struct {
	pending chan delivery
	exited  chan struct{}
}

type delivery struct {
	v    int64
	done stage.Done
}

func newAcker(finish func(delivery)) *acker {
	a := &acker{pending: make(chan delivery, 8), exited: make(chan struct{})}
	go func() {
		defer close(a.exited)
		for d := range a.pending {
			finish(d)
		}
	}()
	return a
}

func (a *acker) produce(_ context.Context, v int64, done stage.Done) error {
	a.pending <- delivery{v: v, done: done}
	return nil
}

func (a *acker) close(context.Context) error {
	close(a.pending)
	<-a.exited
	return nil
}

// runAsync runs Generate(n) → offsetOf → sink with the error handler fs.
func runAsync(t *testing.T, n int64, fs *failures, sink *stage.Stage[int64, stage.None], opts ...pipeline.Option) (*pipeline.Pipeline, *completions, error) {
	t.Helper()
	src := offsets(n)
	done := track(src)
	opts = append([]pipeline.Option{pipeline.WithLogger(quiet), pipeline.WithErrorHandler(fs.handle)}, opts...)
	b := pipeline.New(src, opts...)
	pipeline.To(pipeline.Then(b.Source(), stage.Map("offset", offsetOf)), sink)
	p := build(t, b)
	return p, done, p.Run(context.Background())
}

func TestAsyncSinkAcksFromAnotherGoroutineCompleteEvents(t *testing.T) {
	const n = 200
	a := newAcker(func(d delivery) { d.done.Ack() })
	var fs failures
	p, done, err := runAsync(t, n, &fs, stage.AsyncSink("produce", a.produce, stage.WithClose(a.close), stage.WithConcurrency(4)))
	if err != nil {
		t.Fatal(err)
	}
	done.exactlyOnceOK(t, n)
	if st := stageStats(t, p, "produce"); st.In != n || st.Out != n || st.Errors != 0 {
		t.Fatalf("stats %+v", st)
	}
	if len(fs.all()) != 0 {
		t.Fatalf("unexpected failures %+v", fs.all())
	}
}

func TestAsyncSinkNackGoesToTheErrorHandler(t *testing.T) {
	const n = 20
	errDelivery := errors.New("delivery failed")
	a := newAcker(func(d delivery) {
		switch {
		case d.v == 0:
			d.done.Nack(nil) // still a failure
		case d.v%2 == 1:
			d.done.Nack(errDelivery)
		default:
			d.done.Ack()
		}
	})
	var fs failures
	p, done, err := runAsync(t, n, &fs, stage.AsyncSink("produce", a.produce, stage.WithClose(a.close)))
	if err != nil {
		t.Fatal(err)
	}
	done.exactlyOnceOK(t, n) // handled failures complete ok
	got := fs.all()
	if len(got) != n/2+1 {
		t.Fatalf("handler got %d failures, want %d", len(got), n/2+1)
	}
	for _, f := range got {
		if f.stage != "produce" || f.attempts != 1 || len(f.offsets) != 1 {
			t.Fatalf("failure %+v", f)
		}
		if off := f.offsets[0]; (off%2 == 1) != errors.Is(f.err, errDelivery) || (off == 0) != strings.Contains(f.err.Error(), "Nack(nil)") {
			t.Fatalf("offset %d: failure error %v", off, f.err)
		}
	}
	if st := stageStats(t, p, "produce"); st.Handled != n/2+1 || st.Errors != n/2+1 || st.Out != n/2-1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAsyncSinkFnErrorIsRetriedWithoutItsDone(t *testing.T) {
	var (
		mu    sync.Mutex
		tries = map[int64]int{}
	)
	a := newAcker(func(d delivery) { d.done.Ack() })
	sink := stage.AsyncSink("produce", func(ctx context.Context, v int64, done stage.Done) error {
		mu.Lock()
		tries[v]++
		first := tries[v] == 1
		mu.Unlock()
		if v == 1 && first {
			return errors.New("queue full") // not taken: done must not be used
		}
		return a.produce(ctx, v, done)
	}, stage.WithClose(a.close), stage.WithRetry(stage.Retry{Retries: 1, Backoff: 0, MaxBackoff: 0}))
	var fs failures
	p, done, err := runAsync(t, 3, &fs, sink)
	if err != nil {
		t.Fatal(err)
	}
	done.exactlyOnceOK(t, 3)
	if st := stageStats(t, p, "produce"); st.Retries != 1 || st.Out != 3 || tries[1] != 2 {
		t.Fatalf("stats %+v, tries %v", st, tries)
	}
}

func TestAsyncSinkSecondAckIsDetected(t *testing.T) {
	const n = 10
	var (
		mu   sync.Mutex
		used []stage.Done
	)
	sink := stage.AsyncSink("produce", func(_ context.Context, _ int64, done stage.Done) error {
		done.Ack()
		mu.Lock()
		used = append(used, done)
		mu.Unlock()
		return nil
	})
	var fs failures
	_, done, err := runAsync(t, n, &fs, sink)
	if err != nil {
		t.Fatal(err)
	}
	done.exactlyOnceOK(t, n)

	setDebug(t, false)
	before := pool.DoubleReleases()
	for _, d := range used {
		d.Ack()
		d.Nack(errors.New("late"))
	}
	if got := pool.DoubleReleases() - before; got != 2*n {
		t.Fatalf("DoubleReleases grew by %d, want %d (every second Ack/Nack detected)", got, 2*n)
	}
	done.exactlyOnceOK(t, n) // and ignored: no event completed again
	if len(fs.all()) != 0 {
		t.Fatal("a late Nack reached the error handler")
	}

	pool.SetDebug(true)
	mustPanicMisuse(t, used[0].Ack)
}

func TestAsyncSinkUnfinishedDoneFailsRunAfterCloseTimeout(t *testing.T) {
	var (
		mu   sync.Mutex
		held []stage.Done
	)
	sink := stage.AsyncSink("forgetful", func(_ context.Context, _ int64, done stage.Done) error {
		mu.Lock()
		held = append(held, done)
		mu.Unlock()
		return nil
	}) // no close hook: nothing ends the held Done values
	var fs failures
	p, done, err := runAsync(t, 2, &fs, sink, pipeline.WithCloseTimeout(10*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "unfinished") {
		t.Fatalf("Run = %v, want the close-timeout error naming unfinished events", err)
	}
	if st := p.Stats(); st.InFlightEvents != 2 {
		t.Fatalf("in flight %d, want 2", st.InFlightEvents)
	}
	for _, d := range held { // late acks still complete the events, once
		d.Ack()
	}
	done.exactlyOnceOK(t, 2)
	if st := p.Stats(); st.InFlightEvents != 0 || st.InFlightBytes != 0 {
		t.Fatalf("after the late acks: %+v", st)
	}
}

// TestAsyncSinkFailStopsThePipelineWhateverThePolicy: Done.Fail skips the Handle policy's
// error handler; Run returns the error and the failed event does not complete ok.
func TestAsyncSinkFailStopsThePipelineWhateverThePolicy(t *testing.T) {
	const n = 50
	errFatal := errors.New("producer is dead")
	a := newAcker(func(d delivery) {
		if d.v == 7 {
			d.done.Fail(errFatal)
			return
		}
		d.done.Ack()
	})
	var fs failures
	_, done, err := runAsync(t, n, &fs, stage.AsyncSink("produce", a.produce, stage.WithClose(a.close)))
	if !errors.Is(err, errFatal) || !strings.Contains(err.Error(), `"produce"`) {
		t.Fatalf("Run = %v, want %v naming the stage", err, errFatal)
	}
	if len(fs.all()) != 0 {
		t.Fatalf("the error handler ran for a Fail: %+v", fs.all())
	}
	done.mu.Lock()
	defer done.mu.Unlock()
	if done.ok[7] != 0 || done.bad[7] != 1 {
		t.Fatalf("offset 7 completed ok %d, not ok %d times; want not ok once", done.ok[7], done.bad[7])
	}
}

// TestFaultPoolReuseStress (fault scenario 22): under -race, every Done of a run is finished
// twice by two goroutines at once, and then once more, stale, while a second run reuses the
// same pooled tickets and events. Exactly one finish per message takes effect; every other is
// counted by pool.DoubleReleases; the second run's events each complete exactly once.
func TestFaultPoolReuseStress(t *testing.T) {
	setDebug(t, false)
	const n = 3000
	before := pool.DoubleReleases()
	var mu sync.Mutex
	var stale []stage.Done
	a := newAcker(func(d delivery) {
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); d.done.Ack() }()
		}
		wg.Wait()
		mu.Lock()
		stale = append(stale, d.done)
		mu.Unlock()
	})
	var fs failures
	_, done, err := runAsync(t, n, &fs, stage.AsyncSink("produce", a.produce, stage.WithClose(a.close), stage.WithConcurrency(8)))
	if err != nil {
		t.Fatal(err)
	}
	done.exactlyOnceOK(t, n)
	if got := pool.DoubleReleases() - before; got != n {
		t.Fatalf("DoubleReleases grew by %d after %d racing double Acks, want %d", got, n, n)
	}

	before = pool.DoubleReleases()
	lateDone := make(chan struct{})
	go func() { // stale Acks while the second run recycles the same tickets and events
		defer close(lateDone)
		for _, d := range stale {
			d.Ack()
		}
	}()
	b := newAcker(func(d delivery) { d.done.Ack() })
	_, done2, err := runAsync(t, n, &fs, stage.AsyncSink("produce", b.produce, stage.WithClose(b.close), stage.WithConcurrency(8)))
	<-lateDone
	if err != nil {
		t.Fatal(err)
	}
	done2.exactlyOnceOK(t, n)
	if got := pool.DoubleReleases() - before; got != n {
		t.Fatalf("DoubleReleases grew by %d after %d stale Acks, want %d", got, n, n)
	}
	if len(fs.all()) != 0 {
		t.Fatalf("unexpected failures %+v", fs.all())
	}
}

// TestAsyncSinkFnThatEndsItsDoneAndFails: fn ends its Done and then returns an error or panics
// (a misuse: an fn that returns an error has not taken ownership). The Done already finished the
// message, so the misuse is counted and nothing else happens: no retry, no second failure, no
// ticket reused twice (which would finish another record's event). Every event finishes exactly
// once.
func TestAsyncSinkFnThatEndsItsDoneAndFails(t *testing.T) {
	const n = 300
	before := pool.DoubleReleases()
	fn := func(_ context.Context, v int64, done stage.Done) error {
		switch v % 3 {
		case 1:
			done.Ack()
			return errors.New("acked and failed")
		case 2:
			done.Ack()
			panic("acked and panicked")
		}
		done.Ack()
		return nil
	}
	var fs failures
	p, done, err := runAsync(t, n, &fs, stage.AsyncSink("produce", fn, stage.WithConcurrency(4), stage.WithRetry(stage.Retry{Retries: 2, Backoff: time.Millisecond, MaxBackoff: time.Millisecond})))
	if err != nil {
		t.Fatal(err)
	}
	done.exactlyOnceOK(t, n)
	if got := pool.DoubleReleases() - before; got != 2*n/3 {
		t.Fatalf("misuses counted %d, want %d", got, 2*n/3)
	}
	if len(fs.all()) != 0 {
		t.Fatalf("failures handled %d, want none (every Done ended ok)", len(fs.all()))
	}
	if st := stageStats(t, p, "produce"); st.Out != n {
		t.Fatalf("stats %+v", st)
	}
}
