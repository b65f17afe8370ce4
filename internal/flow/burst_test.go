package flow_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// A one-worker sink reads a burst in order and, while its calls are fast, finishes the burst's
// events together (ManyFinisher) after the burst.
func TestSinkFinishesABurstTogether(t *testing.T) {
	var (
		wg   sync.WaitGroup
		f    manyFinisher
		seen []int64
	)
	env := testEnv(t, &wg)
	pub := stage.Sink("bursts", func(_ context.Context, ev *stage.Event) error {
		seen = append(seen, ev.Offset) // one worker
		return nil
	})
	s := coreOf(pub)
	in := s.NewInput()
	if err := s.Start(env, in, nil); err != nil {
		t.Fatal(err)
	}
	if !in.TakesBursts() {
		t.Fatal("a one-worker sink's input does not take bursts")
	}
	const bursts = 40 // enough calls for the stage to be timed as fast
	for r := range bursts {
		evs, ls := begun(flow.MaxBurst, &f)
		for i, ev := range evs {
			ev.Offset = int64(r*flow.MaxBurst + i)
		}
		if !flow.EmitBurst(context.Background(), in, evs, ls, time.Minute) {
			t.Fatal("EmitBurst failed")
		}
	}
	in.Close()
	wg.Wait()
	const n = bursts * flow.MaxBurst
	if ok, bad := f.count(); ok != n || bad != 0 {
		t.Fatalf("finisher got ok=%d bad=%d, want %d/0", ok, bad, n)
	}
	for i, off := range seen {
		if off != int64(i) {
			t.Fatalf("offset %d at position %d: a burst lost its order", off, i)
		}
	}
	if f.manyCalls() == 0 {
		t.Fatal("no FinishMany: every event was finished alone")
	}
	if st := pub.Stats(); st.In != n || st.Out != n {
		t.Fatalf("in %d, out %d; want %d each", st.In, st.Out, n)
	}
}

// Several unordered workers do not take bursts.
func TestUnorderedWorkersTakeNoBursts(t *testing.T) {
	var wg sync.WaitGroup
	s := coreOf(stage.Sink("wide", func(context.Context, *stage.Event) error { return nil }, stage.WithConcurrency(3)))
	in := s.NewInput()
	if err := s.Start(testEnv(t, &wg), in, nil); err != nil {
		t.Fatal(err)
	}
	if in.TakesBursts() {
		t.Error("the input of 3 unordered workers takes bursts")
	}
	in.Close()
	wg.Wait()
}

// Events finished together (FinishMany) are retired: a late completion or Release of one is a
// counted misuse that changes nothing. They are recycled: the events a flow.Cache hands out
// next are those same objects (sync.Pool may drop some, under -race a quarter of its Puts),
// emptied, live, each once.
func TestManyFinishedEventsAreRetiredAndRecycled(t *testing.T) {
	setDebug(t, false)
	var (
		wg sync.WaitGroup
		f  manyFinisher
	)
	s := coreOf(stage.Sink("bursts", func(context.Context, *stage.Event) error { return nil }))
	in := s.NewInput()
	if err := s.Start(testEnv(t, &wg), in, nil); err != nil {
		t.Fatal(err)
	}
	var evs []*stage.Event
	for range 40 {
		burst, ls := begun(flow.MaxBurst, &f)
		for _, ev := range burst { // fields the recycling must clear
			ev.Topic, ev.Partition, ev.SourceTag, ev.Timestamp = "t", 3, 7, time.Now()
			ev.Key, ev.Value = append(ev.Key, 'k'), append(ev.Value, 'v')
			ev.Headers = append(ev.Headers, stage.Header{Key: "h", Value: []byte("x")})
		}
		evs = append(evs, burst...)
		if !flow.EmitBurst(context.Background(), in, burst, ls, time.Minute) {
			t.Fatal("EmitBurst failed")
		}
	}
	in.Close()
	wg.Wait()
	if f.manyCalls() == 0 {
		t.Fatal("no FinishMany")
	}
	okBefore, badBefore := f.count()
	if okBefore != len(evs) || badBefore != 0 {
		t.Fatalf("finisher got ok=%d bad=%d, want %d/0", okBefore, badBefore, len(evs))
	}
	// Every event finished (those finished together were retired, the others released): a
	// late completion and a late Release of each is a misuse, counted, and reaches no finisher.
	before := pool.DoubleReleases()
	for _, ev := range evs {
		was := pool.DoubleReleases()
		life(ev).Complete()
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
	var c flow.Cache
	seen := map[*stage.Event]bool{}
	reused := 0
	for range 2 * len(evs) {
		ev := c.Get().Owner.(*stage.Event)
		if seen[ev] {
			t.Fatal("flow.Cache handed out the same event twice")
		}
		seen[ev] = true
		if first[ev] {
			reused++
		}
		if ev.Topic != "" || ev.Partition != 0 || ev.Offset != 0 || len(ev.Key) != 0 || len(ev.Value) != 0 ||
			len(ev.Headers) != 0 || !ev.Timestamp.IsZero() || ev.SourceTag != 0 || life(ev).Size() != 0 || ev.Origin() != (stage.Origin{}) {
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
		t.Fatalf("%d events handed out by flow.Cache were not live", d)
	}
	t.Logf("%d of %d finished events reused", reused, len(evs))
}

// A sink that collects a burst's completions finishes what it collected before a retry's
// backoff: events done before a failing call are not held for the backoff.
func TestSinkFinishesCollectedEventsBeforeABackoff(t *testing.T) {
	var (
		wg sync.WaitGroup
		f  manyFinisher
	)
	ctx, cancel := context.WithCancel(t.Context())
	env := testEnv(t, &wg)
	env.Ctx = ctx
	const failAt = flow.MaxBurst - 1 // the last message of the second burst
	s := coreOf(stage.Sink("retry", func(_ context.Context, ev *stage.Event) error {
		if ev.Offset == flow.MaxBurst+failAt {
			return errors.New("transient")
		}
		return nil
	}, stage.WithRetry(stage.Retry{Retries: 1, Backoff: time.Hour, MaxBackoff: time.Hour})))
	in := s.NewInput()
	if err := s.Start(env, in, nil); err != nil {
		t.Fatal(err)
	}
	for r := range 2 {
		evs, ls := begun(flow.MaxBurst, &f)
		for i, ev := range evs {
			ev.Offset = int64(r*flow.MaxBurst + i)
		}
		if !flow.EmitBurst(context.Background(), in, evs, ls, time.Minute) {
			t.Fatal("EmitBurst failed")
		}
	}
	// The worker now waits an hour before the retry; everything before the failing message
	// must be finished (ok) meanwhile.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ok, _ := f.count(); ok == flow.MaxBurst+failAt {
			break
		}
		if time.Now().After(deadline) {
			ok, _ := f.count()
			t.Fatalf("%d events finished while the worker waits for its backoff, want %d", ok, flow.MaxBurst+failAt)
		}
		time.Sleep(time.Millisecond) // poll interval: the backoff gives no signal
	}
	cancel() // hard stop: ends the backoff; the failing event is abandoned
	in.Close()
	wg.Wait()
	if ok, bad := f.count(); ok != flow.MaxBurst+failAt || bad != 1 {
		t.Fatalf("finisher got ok=%d bad=%d, want %d/1", ok, bad, flow.MaxBurst+failAt)
	}
}
