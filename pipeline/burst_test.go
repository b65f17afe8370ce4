package pipeline_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/internal/handover"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// burstSource emits n events (event i has Offset i and a payload of size bytes) in bursts of
// handover.MaxBurst with TryEmitBurst, as the Kafka source does, retrying what was not taken.
// It records every completion and how many came through CompleteMany. The payload is copied
// into each event's own buffer, as a source must: the pipeline owns (and, under -race,
// poisons on recycling) the bytes behind an emitted event's Value.
type burstSource struct {
	n       int
	payload []byte
	cache   flow.Cache

	mu      sync.Mutex
	ok, bad map[int64]int
	many    int // CompleteMany calls
	track   bool
}

func newBurstSource(n, size int, track bool) *burstSource {
	return &burstSource{n: n, payload: make([]byte, size), ok: map[int64]int{}, bad: map[int64]int{}, track: track}
}

func (r *burstSource) Run(ctx context.Context, e *pipeline.Emitter) error {
	emit := handover.Of(e)
	evs := make([]*stage.Event, 0, handover.MaxBurst)
	next := 0
	for sent := 0; sent < r.n && ctx.Err() == nil; {
		for len(evs) < handover.MaxBurst && next < r.n {
			ev := r.cache.Get().Owner.(*stage.Event)
			ev.Offset, ev.Value = int64(next), append(ev.Value[:0], r.payload...)
			evs = append(evs, ev)
			next++
		}
		k := emit.TryEmitBurst(ctx, evs, 10*time.Millisecond)
		sent += k
		evs = append(evs[:0], evs[k:]...)
	}
	for _, ev := range evs { // ctx ended: what was not taken is still ours
		ev.Release()
	}
	return nil
}

func (r *burstSource) Complete(ev *stage.Event, ok bool) {
	if !r.track {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record(ev, ok)
}

func (r *burstSource) CompleteMany(evs []*stage.Event, ok []bool) {
	if !r.track {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.many++
	for i, ev := range evs {
		r.record(ev, ok[i])
	}
}

func (r *burstSource) record(ev *stage.Event, ok bool) {
	if ok {
		r.ok[ev.Offset]++
	} else {
		r.bad[ev.Offset]++
	}
}

// exactlyOnceOK checks that every event completed exactly once, ok.
func (r *burstSource) exactlyOnceOK(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range int64(r.n) {
		if r.ok[i] != 1 || r.bad[i] != 0 {
			t.Fatalf("offset %d completed ok %d times, not ok %d times; want once ok", i, r.ok[i], r.bad[i])
		}
	}
}

// A burst goes to a one-worker stage in one piece: the sink sees every event in emission
// order, each event completes exactly once, and the sink's completions arrive together
// (CompleteMany).
func TestBurstsReachOneWorkerInOrderAndCompleteTogether(t *testing.T) {
	const n = 5000
	src := newBurstSource(n, 100, true)
	b := pipeline.New(src, pipeline.WithBudget(1<<20), pipeline.WithLogger(quiet))
	var got []int64 // the sink has one worker
	pipeline.To(b.Source(), stage.Sink("sink", func(_ context.Context, ev *stage.Event) error {
		got = append(got, ev.Offset)
		return nil
	}))
	p := build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("sink saw %d events, want %d", len(got), n)
	}
	for i, off := range got {
		if off != int64(i) {
			t.Fatalf("sink saw offset %d at position %d: order lost", off, i)
		}
	}
	src.exactlyOnceOK(t)
	if src.many == 0 {
		t.Error("no completion came through CompleteMany: the sink finished every event alone")
	}
	st := p.Stats()
	if st.Completed != n || st.InFlightBytes != 0 || st.InFlightEvents != 0 {
		t.Errorf("completed %d, in flight %d bytes / %d events; want %d, 0, 0", st.Completed, st.InFlightBytes, st.InFlightEvents, n)
	}
	if sk := st.Stages[0]; sk.In != n || sk.Out != n {
		t.Errorf("sink counted in %d, out %d; want %d each", sk.In, sk.Out, n)
	}
}

// A stage of several unordered workers takes no bursts (a stuck call would hold the rest of its
// burst): TryEmitBurst hands the events over one by one, and all of them complete.
func TestBurstsGoOneByOneToUnorderedWorkers(t *testing.T) {
	const n = 2000
	src := newBurstSource(n, 100, true)
	b := pipeline.New(src, pipeline.WithBudget(1<<20), pipeline.WithLogger(quiet))
	pipeline.To(b.Source(), stage.Sink("sink", func(context.Context, *stage.Event) error { return nil }, stage.WithConcurrency(4)))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	src.exactlyOnceOK(t)
	if src.many != 0 {
		t.Errorf("%d CompleteMany calls from unordered workers, want 0 (no bursts)", src.many)
	}
}

// When the budget has no room for the whole burst, TryEmitBurst hands over the prefix that
// fits, one by one, and the caller keeps the rest.
func TestTryEmitBurstBudgetTakesAPrefix(t *testing.T) {
	g := newGate()
	src := &handOver{ready: make(chan *pipeline.Emitter, 1)}
	b := pipeline.New(src, pipeline.WithBudget(1000), pipeline.WithMaxEventBytes(100), pipeline.WithLogger(quiet), pipeline.WithSize(payloadSize))
	pipeline.To(b.Source(), stage.Sink("sink", func(ctx context.Context, ev *stage.Event) error { return g.pass(ctx, ev.Offset) }))
	p := build(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, p, g.open)
	emitter := <-src.ready
	payload := make([]byte, 100)
	evs := make([]*stage.Event, handover.MaxBurst)
	for i := range evs {
		evs[i] = stage.GetEvent()
		evs[i].Offset, evs[i].Value = int64(i), append(evs[i].Value[:0], payload...) // the event's own bytes
	}
	if k := handover.Of(emitter).TryEmitBurst(ctx, evs, 0); k != 10 {
		t.Fatalf("TryEmitBurst took %d events of 100 B with a 1000 B budget, want 10", k)
	}
	for _, ev := range evs[10:] { // still ours
		ev.Release()
	}
	g.open()
	cancel()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Completed != 10 || st.InFlightBytes != 0 {
		t.Errorf("completed %d, %d bytes in flight; want 10, 0", st.Completed, st.InFlightBytes)
	}
}

// handOver is a source that gives its emitter to the test and waits for the end.
type handOver struct{ ready chan *pipeline.Emitter }

func (h *handOver) Run(ctx context.Context, e *pipeline.Emitter) error {
	h.ready <- e
	<-ctx.Done()
	return nil
}

func (h *handOver) Complete(*stage.Event, bool) {}

// BenchmarkSourceToSink is the e2e shape without Kafka: a source emitting bursts, one no-op
// sink, on one CPU. The cost per event is the framework's: pooled event, budget, the burst's
// hand-over, the sink call and the completion of the burst's events together.
func BenchmarkSourceToSink(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	src := newBurstSource(b.N, 100, false)
	bld := pipeline.New(src, pipeline.WithBudget(32<<20), pipeline.WithLogger(quiet))
	pipeline.To(bld.Source(), stage.Sink("s", func(context.Context, *stage.Event) error { return nil }))
	p, err := bld.Build()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if err := p.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
}
