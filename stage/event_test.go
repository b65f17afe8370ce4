package stage_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// finisher records completions and releases the events, as the pipeline does.
type finisher struct {
	mu  sync.Mutex
	oks []bool
}

func (f *finisher) Finish(ev *stage.Event, ok bool) {
	f.mu.Lock()
	f.oks = append(f.oks, ok)
	f.mu.Unlock()
	ev.Release()
}

func (f *finisher) count() (ok, bad int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.oks {
		if o {
			ok++
		} else {
			bad++
		}
	}
	return ok, bad
}

// mustPanicMisuse runs fn and fails unless it panics with a *pool.MisuseError.
func mustPanicMisuse(t *testing.T, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if err, ok := r.(error); !ok || !errors.As(err, new(*pool.MisuseError)) {
			t.Fatalf("recovered %v (%T), want a *pool.MisuseError", r, r)
		}
	}()
	fn()
}

func TestEventCompleteFinishesOnceAndReleases(t *testing.T) {
	var f finisher
	ev := stage.GetEvent()
	if len(ev.Key) != 0 || len(ev.Value) != 0 || len(ev.Headers) != 0 || ev.Size() != 0 {
		t.Fatalf("GetEvent returned a dirty event: %+v", ev)
	}
	ev.Value = append(ev.Value, "abc"...)
	ev.Begin(3, &f)
	if ev.Size() != 3 {
		t.Fatalf("Size() = %d after Begin(3)", ev.Size())
	}
	stage.Complete(ev)
	if ok, bad := f.count(); ok != 1 || bad != 0 {
		t.Fatalf("finisher got ok=%d bad=%d, want 1/0", ok, bad)
	}
}

func TestEventAbandonFinishesNotOK(t *testing.T) {
	var f finisher
	ev := stage.GetEvent()
	ev.Begin(1, &f)
	stage.Abandon(ev)
	if ok, bad := f.count(); ok != 0 || bad != 1 {
		t.Fatalf("finisher got ok=%d bad=%d, want 0/1", ok, bad)
	}
}

func TestEventUnbeginReturnsOwnership(t *testing.T) {
	setDebug(t, true) // any misuse below panics
	var f finisher
	ev := stage.GetEvent()
	ev.Begin(9, &f)
	stage.Unbegin(ev)
	if ev.Size() != 0 {
		t.Fatalf("Size() = %d after Unbegin", ev.Size())
	}
	ev.Release() // the caller owns it again: no misuse
	if ok, bad := f.count(); ok+bad != 0 {
		t.Fatal("Unbegin finished the event")
	}
}

// TestEventOriginFixedAtEmission: Begin fixes the event's Origin from its fields; a stage
// changing them afterwards does not move it; a recycled event starts with none.
func TestEventOriginFixedAtEmission(t *testing.T) {
	var f finisher
	ev := stage.GetEvent()
	if ev.Origin() != (stage.Origin{}) {
		t.Fatalf("Origin before emission = %+v", ev.Origin())
	}
	ev.Topic, ev.Partition, ev.Offset, ev.SourceTag, ev.Key = "in", 3, 42, 7, []byte("k")
	ev.Begin(1, &f)
	want := stage.Origin{Topic: "in", Partition: 3, Offset: 42, Tag: 7}
	ev.Topic, ev.Partition, ev.Offset, ev.SourceTag, ev.Key = "other", 9, 1, 8, nil
	if got := ev.Origin(); got != want {
		t.Fatalf("Origin = %+v after a stage changed the fields, want %+v", got, want)
	}
	stage.Complete(ev) // the finisher releases it
	if ok, _ := f.count(); ok != 1 {
		t.Fatal("not finished")
	}
	ev = stage.GetEvent()
	defer ev.Release()
	if ev.Origin() != (stage.Origin{}) {
		t.Fatalf("a recycled event kept its Origin: %+v", ev.Origin())
	}
}

func TestEventDoubleReleaseIsCounted(t *testing.T) {
	setDebug(t, false)
	before := pool.DoubleReleases()
	ev := stage.GetEvent()
	ev.Release()
	ev.Release()
	if got := pool.DoubleReleases() - before; got != 1 {
		t.Fatalf("DoubleReleases grew by %d after a double Release, want 1", got)
	}
}

func TestEventDoubleReleasePanicsInDebug(t *testing.T) {
	setDebug(t, true)
	before := pool.DoubleReleases()
	ev := stage.GetEvent()
	ev.Release()
	mustPanicMisuse(t, ev.Release)
	if got := pool.DoubleReleases() - before; got != 1 {
		t.Fatalf("DoubleReleases grew by %d, want 1", got)
	}
}

func TestEventReleaseWhileInFlightIsDetectedAndIgnored(t *testing.T) {
	setDebug(t, false)
	var f finisher
	before := pool.DoubleReleases()
	ev := stage.GetEvent()
	ev.Begin(1, &f)
	ev.Release() // misuse: the event is in flight
	if got := pool.DoubleReleases() - before; got != 1 {
		t.Fatalf("DoubleReleases grew by %d, want 1", got)
	}
	stage.Complete(ev) // the event was left alone: it still finishes normally
	if ok, _ := f.count(); ok != 1 {
		t.Fatal("event did not finish after the ignored Release")
	}
	if got := pool.DoubleReleases() - before; got != 1 {
		t.Fatalf("DoubleReleases grew by %d, want 1", got)
	}
}

func TestEventCompletedTwiceIsDetected(t *testing.T) {
	setDebug(t, true)
	var f finisher
	ev := stage.GetEvent()
	ev.Begin(1, &f)
	stage.Complete(ev)
	mustPanicMisuse(t, func() { stage.Complete(ev) })
	if ok, bad := f.count(); ok != 1 || bad != 0 {
		t.Fatalf("finisher got ok=%d bad=%d, want exactly one ok", ok, bad)
	}
}

func TestEdgeCapacityEmitAndDiscard(t *testing.T) {
	if c := stage.NewEdge[int](0).Cap(); c != 1 {
		t.Fatalf("NewEdge(0).Cap() = %d, want 1", c)
	}
	var f finisher
	e := stage.NewEdge[*stage.Event](3)
	for range 3 {
		ev := stage.GetEvent()
		ev.Begin(1, &f)
		if err := stage.EmitEvent(context.Background(), e, ev); err != nil {
			t.Fatal(err)
		}
	}
	if e.Len() != 3 || e.Cap() != 3 {
		t.Fatalf("Len/Cap = %d/%d, want 3/3", e.Len(), e.Cap())
	}
	ev := stage.GetEvent()
	ev.Begin(1, &f)
	if stage.TryEmitEvent(e, ev) {
		t.Fatal("TryEmitEvent succeeded on a full edge")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := stage.EmitEvent(ctx, e, ev); !errors.Is(err, context.Canceled) {
		t.Fatalf("EmitEvent on a full edge with a done ctx = %v", err)
	}
	stage.Abandon(ev) // still ours after the failed emits
	if n := e.Discard(); n != 3 {
		t.Fatalf("Discard() = %d, want 3", n)
	}
	if ok, bad := f.count(); ok != 0 || bad != 4 {
		t.Fatalf("finisher got ok=%d bad=%d, want 0/4 (discarded events are not ok)", ok, bad)
	}
	e.Close()
	if n := e.Discard(); n != 0 {
		t.Fatalf("Discard on a closed empty edge = %d", n)
	}
}

// testEnv is a stage.Env that runs tasks on plain goroutines, for driving a stage directly.
func testEnv(t *testing.T, wg *sync.WaitGroup) *stage.Env {
	return &stage.Env{
		Ctx:    t.Context(),
		Go:     func(task func()) error { wg.Go(task); return nil },
		Fail:   func(err error) { t.Errorf("unexpected fatal error: %v", err) },
		Handle: func(_ context.Context, f *stage.Failure) error { t.Errorf("unexpected failure: %v", f); return nil },
		Logger: quiet,
	}
}

func TestSinkRunsDirectlyOnAnEnvAndStartsOnce(t *testing.T) {
	var (
		wg   sync.WaitGroup
		f    finisher
		seen []int64
	)
	env := testEnv(t, &wg)
	s := stage.Sink("direct", func(_ context.Context, ev *stage.Event) error {
		seen = append(seen, ev.Offset) // one worker: no lock needed
		return nil
	})
	in := stage.NewEdge[*stage.Event](s.Capacity())
	if err := s.Start(env, in, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(env, in, nil); !errors.Is(err, stage.ErrInvalid) {
		t.Fatalf("second Start = %v, want ErrInvalid", err)
	}
	for i := range int64(5) {
		ev := stage.GetEvent()
		ev.Offset = i
		ev.Begin(1, &f)
		if err := stage.EmitEvent(context.Background(), in, ev); err != nil {
			t.Fatal(err)
		}
	}
	in.Close()
	wg.Wait()
	if ok, bad := f.count(); ok != 5 || bad != 0 {
		t.Fatalf("finisher got ok=%d bad=%d, want 5/0", ok, bad)
	}
	if len(seen) != 5 || seen[0] != 0 || seen[4] != 4 {
		t.Fatalf("sink saw %v", seen)
	}
	st := s.Stats()
	if st.Name != "direct" || st.Kind != stage.KindSink || st.In != 5 || st.Out != 5 || st.QueueLen != 0 || st.QueueCap != stage.DefaultCapacity {
		t.Fatalf("stats %+v", st)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close of a sink without a close hook = %v", err)
	}
}
