package stage_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// batchFinisher is a finisher that also finishes in batches, as the pipeline does.
type batchFinisher struct {
	finisher
	batches int
}

func (f *batchFinisher) FinishBatch(evs []*stage.Event, ok []bool) {
	f.mu.Lock()
	f.batches++
	f.oks = append(f.oks, ok...)
	f.mu.Unlock()
	// No Release: the events are retired, and the worker recycles them.
}

// begun returns n events with Offset i, begun with fin.
func begun(n int, fin stage.Finisher) []*stage.Event {
	evs := make([]*stage.Event, n)
	for i := range evs {
		evs[i] = stage.GetEvent()
		evs[i].Offset = int64(i)
		evs[i].Begin(1, fin)
	}
	return evs
}

// A run takes one slot but counts as its messages: once runs fill the capacity neither a run
// nor a single message fits; Discard ends every message of every run, not ok.
func TestEdgeRunRoomAndDiscard(t *testing.T) {
	var f finisher
	e := stage.Sink("s", func(context.Context, *stage.Event) error { return nil }, stage.Capacity(2*stage.MaxRun)).NewInput()
	if !e.TakesRuns() || e.Cap() != 2*stage.MaxRun {
		t.Fatalf("TakesRuns %v, Cap %d; want true, %d", e.TakesRuns(), e.Cap(), 2*stage.MaxRun)
	}
	for range 2 {
		if !stage.EmitEvents(context.Background(), e, begun(stage.MaxRun, &f), 0) {
			t.Fatal("EmitEvents with a free run slot failed")
		}
	}
	if e.Len() != 2*stage.MaxRun {
		t.Fatalf("Len() = %d after two runs, want %d", e.Len(), 2*stage.MaxRun)
	}
	single := begun(1, &f)[0]
	if stage.TryEmitEvent(e, single) {
		t.Fatal("a single message went beyond the capacity the runs filled")
	}
	stage.Abandon(single) // still ours
	rest := begun(3, &f)
	if stage.EmitEvents(context.Background(), e, rest, time.Millisecond) {
		t.Fatal("EmitEvents with the capacity full succeeded")
	}
	for _, ev := range rest { // still ours
		stage.Abandon(ev)
	}
	if n := e.Discard(); n != 2*stage.MaxRun {
		t.Fatalf("Discard() = %d, want %d", n, 2*stage.MaxRun)
	}
	if ok, bad := f.count(); ok != 0 || bad != 2*stage.MaxRun+4 {
		t.Fatalf("finisher got ok=%d bad=%d, want 0/%d", ok, bad, 2*stage.MaxRun+4)
	}
}

// A one-worker sink reads a run in order and, while its calls are fast, finishes the run's
// events in one batch (BatchFinisher) after the run.
func TestSinkFinishesARunInBatches(t *testing.T) {
	var (
		wg   sync.WaitGroup
		f    batchFinisher
		seen []int64
	)
	env := testEnv(t, &wg)
	s := stage.Sink("runs", func(_ context.Context, ev *stage.Event) error {
		seen = append(seen, ev.Offset) // one worker
		return nil
	})
	in := s.NewInput()
	if err := s.Start(env, in, nil); err != nil {
		t.Fatal(err)
	}
	if !in.TakesRuns() {
		t.Fatal("a one-worker sink's input does not take runs")
	}
	const runs = 40 // enough calls for the stage to be timed as fast
	for r := range runs {
		evs := begun(stage.MaxRun, &f)
		for i, ev := range evs {
			ev.Offset = int64(r*stage.MaxRun + i)
		}
		if !stage.EmitEvents(context.Background(), in, evs, time.Minute) {
			t.Fatal("EmitEvents failed")
		}
	}
	in.Close()
	wg.Wait()
	const n = runs * stage.MaxRun
	if ok, bad := f.count(); ok != n || bad != 0 {
		t.Fatalf("finisher got ok=%d bad=%d, want %d/0", ok, bad, n)
	}
	for i, off := range seen {
		if off != int64(i) {
			t.Fatalf("offset %d at position %d: a run lost its order", off, i)
		}
	}
	if f.batches == 0 {
		t.Fatal("no batch finish: every event was finished alone")
	}
	if st := s.Stats(); st.In != n || st.Out != n {
		t.Fatalf("in %d, out %d; want %d each", st.In, st.Out, n)
	}
}

// Several unordered workers do not take runs.
func TestUnorderedWorkersTakeNoRuns(t *testing.T) {
	var wg sync.WaitGroup
	s := stage.Sink("wide", func(context.Context, *stage.Event) error { return nil }, stage.Concurrency(3))
	in := s.NewInput()
	if err := s.Start(testEnv(t, &wg), in, nil); err != nil {
		t.Fatal(err)
	}
	if in.TakesRuns() {
		t.Error("the input of 3 unordered workers takes runs")
	}
	in.Close()
	wg.Wait()
}

// Events finished in a batch are retired: a late completion or Release of one is a counted
// misuse that changes nothing. They are recycled: the events an EventCache hands out next are
// those same objects (sync.Pool may drop some, under -race a quarter of its Puts), emptied,
// live, each once.
func TestBatchFinishedEventsAreRetiredAndRecycled(t *testing.T) {
	setDebug(t, false)
	var (
		wg sync.WaitGroup
		f  batchFinisher
	)
	s := stage.Sink("runs", func(context.Context, *stage.Event) error { return nil })
	in := s.NewInput()
	if err := s.Start(testEnv(t, &wg), in, nil); err != nil {
		t.Fatal(err)
	}
	var evs []*stage.Event
	for range 40 {
		run := begun(stage.MaxRun, &f)
		for _, ev := range run { // fields the recycling must clear
			ev.Topic, ev.Partition, ev.SourceTag, ev.Timestamp = "t", 3, 7, time.Now()
			ev.Key, ev.Value = append(ev.Key, 'k'), append(ev.Value, 'v')
			ev.Headers = append(ev.Headers, stage.Header{Key: "h", Value: []byte("x")})
		}
		evs = append(evs, run...)
		if !stage.EmitEvents(context.Background(), in, run, time.Minute) {
			t.Fatal("EmitEvents failed")
		}
	}
	in.Close()
	wg.Wait()
	if f.batches == 0 {
		t.Fatal("no batch finish")
	}
	okBefore, badBefore := f.count()
	if okBefore != len(evs) || badBefore != 0 {
		t.Fatalf("finisher got ok=%d bad=%d, want %d/0", okBefore, badBefore, len(evs))
	}
	// Every event finished (batch-finished ones were retired, the others released): a late
	// completion and a late Release of each is a misuse, counted, and reaches no finisher.
	before := pool.DoubleReleases()
	for _, ev := range evs {
		was := pool.DoubleReleases()
		stage.Complete(ev)
		if pool.DoubleReleases() != was+1 {
			t.Fatalf("a late completion of offset %d was not detected", ev.Offset)
		}
		ev.Release()
	}
	if d := int(pool.DoubleReleases() - before); d != 2*len(evs) {
		t.Fatalf("%d of %d late completions and Releases were counted as misuse, want all", d, 2*len(evs))
	}
	if ok, bad := f.count(); ok != okBefore || bad != badBefore {
		t.Fatalf("late completions reached the finisher: ok=%d bad=%d, was %d/%d", ok, bad, okBefore, badBefore)
	}
	first := map[*stage.Event]bool{}
	for _, ev := range evs {
		first[ev] = true
	}
	var c stage.EventCache
	seen := map[*stage.Event]bool{}
	reused := 0
	for range 2 * len(evs) {
		ev := c.Get()
		if seen[ev] {
			t.Fatal("EventCache handed out the same event twice")
		}
		seen[ev] = true
		if first[ev] {
			reused++
		}
		if ev.Topic != "" || ev.Partition != 0 || ev.Offset != 0 || len(ev.Key) != 0 || len(ev.Value) != 0 ||
			len(ev.Headers) != 0 || !ev.Timestamp.IsZero() || ev.SourceTag != 0 || ev.Size() != 0 {
			t.Fatalf("recycled event not empty: %+v", ev)
		}
	}
	if reused < len(evs)/4 {
		t.Fatalf("%d of the %d finished events came back from the pool, want most", reused, len(evs))
	}
	before = pool.DoubleReleases()
	for ev := range seen {
		ev.Release() // live: a first Release is no misuse
	}
	if d := pool.DoubleReleases() - before; d != 0 {
		t.Fatalf("%d events handed out by EventCache were not live", d)
	}
	t.Logf("%d of %d finished events reused", reused, len(evs))
}

// A sink that collects a run's completions finishes what it collected before a retry's
// backoff: events done before a failing call are not held for the backoff.
func TestSinkFinishesCollectedEventsBeforeABackoff(t *testing.T) {
	var (
		wg sync.WaitGroup
		f  batchFinisher
	)
	ctx, cancel := context.WithCancel(t.Context())
	env := testEnv(t, &wg)
	env.Ctx = ctx
	const failAt = stage.MaxRun - 1 // the last message of the second run
	s := stage.Sink("retry", func(_ context.Context, ev *stage.Event) error {
		if ev.Offset == stage.MaxRun+failAt {
			return errors.New("transient")
		}
		return nil
	}, stage.Retry(1, time.Hour, time.Hour))
	in := s.NewInput()
	if err := s.Start(env, in, nil); err != nil {
		t.Fatal(err)
	}
	for r := range 2 {
		evs := begun(stage.MaxRun, &f)
		for i, ev := range evs {
			ev.Offset = int64(r*stage.MaxRun + i)
		}
		if !stage.EmitEvents(context.Background(), in, evs, time.Minute) {
			t.Fatal("EmitEvents failed")
		}
	}
	// The worker now waits an hour before the retry; everything before the failing message
	// must be finished (ok) meanwhile.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ok, _ := f.count(); ok == stage.MaxRun+failAt {
			break
		}
		if time.Now().After(deadline) {
			ok, _ := f.count()
			t.Fatalf("%d events finished while the worker waits for its backoff, want %d", ok, stage.MaxRun+failAt)
		}
		time.Sleep(time.Millisecond) // poll interval: the backoff gives no signal
	}
	cancel() // hard stop: ends the backoff; the failing event is abandoned
	in.Close()
	wg.Wait()
	if ok, bad := f.count(); ok != stage.MaxRun+failAt || bad != 1 {
		t.Fatalf("finisher got ok=%d bad=%d, want %d/1", ok, bad, stage.MaxRun+failAt)
	}
}
