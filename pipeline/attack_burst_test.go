package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Attack tests of the burst hand-over of MemSource (memory.go) and of the counting of a
// stage's In and Out per run (internal/flow/loop.go).

// statOf returns the named stage's stats.
func statOf(p *pipeline.Pipeline, name string) stage.Stats {
	for _, s := range p.Stats().Stages {
		if s.Name == name {
			return s
		}
	}
	panic("no stage " + name)
}

// A stage's Out counts outputs already delivered to the next stage while a later call of
// the same run blocks: Stats must not lag behind what the next stage received for as long as
// a user call blocks. Each case blocks the call of offset 5, after the stage emitted the
// outputs of offsets 0-4 (delivered to the sink, which counts them in its In).
func TestAttackStatsOutWhileLaterCallBlocks(t *testing.T) {
	cases := []struct {
		name string
		opts []pipeline.Option
	}{
		{name: "map"},
		{name: "map-pool", opts: []pipeline.Option{pipeline.WithMaxCalls(4)}},
		{name: "flatmap"},
		{name: "map-c4-ordered"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			var releaseOnce sync.Once
			defer releaseOnce.Do(func() { close(release) })
			block := func(ev *stage.Event) {
				if ev.Offset == 5 {
					<-release
				}
			}
			const n = 64
			var sunk atomic.Int64
			b := pipeline.New(pipeline.Generate(n, func(int64, *stage.Event) {}), append(tc.opts, pipeline.WithLogger(quiet))...)
			var s pipeline.Stream[*stage.Event]
			switch tc.name {
			case "flatmap":
				s = pipeline.Then(b.Source(), stage.FlatMap("mid", func(_ context.Context, ev *stage.Event) ([]*stage.Event, error) {
					block(ev)
					return []*stage.Event{ev}, nil
				}))
			case "map-c4-ordered":
				s = pipeline.Then(b.Source(), stage.Map("mid", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
					block(ev)
					return ev, nil
				}, stage.WithConcurrency(4)))
			default:
				s = pipeline.Then(b.Source(), stage.Map("mid", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
					block(ev)
					return ev, nil
				}))
			}
			pipeline.To(s, stage.Sink("sink", func(_ context.Context, ev *stage.Event) error {
				sunk.Add(1)
				return nil
			}))
			p, err := b.Build()
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- p.Run(context.Background()) }()
			waitFor(t, "the sink to get offsets 0-4", func() bool { return sunk.Load() >= 5 })
			deadline := time.Now().Add(5 * time.Second)
			for {
				mid, sink := statOf(p, "mid"), statOf(p, "sink")
				if mid.Out >= 5 && mid.Out >= sink.In {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("while the call of offset 5 blocks: mid In %d Out %d, sink In %d (got %d): mid's Out lags what the sink received",
						mid.In, mid.Out, sink.In, sunk.Load())
				}
				time.Sleep(time.Millisecond) // poll interval
			}
			releaseOnce.Do(func() { close(release) })
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if mid, sink := statOf(p, "mid"), statOf(p, "sink"); mid.In != n || mid.Out != n || sink.In != n || sink.Out != n {
				t.Fatalf("after Run: mid %d/%d, sink %d/%d; want %d everywhere", mid.In, mid.Out, sink.In, sink.Out, n)
			}
		})
	}
}

// burstCase is one pipeline shape fed by Generate in bursts.
type burstCase struct {
	name    string
	opts    []pipeline.Option
	first   string // "map", "map-c4", "batch", "flatmap", "filter"
	size    func(ev *stage.Event) int64
	tooBig  func(off int64) bool // events the size makes larger than the budget
	ordered bool                 // offsets must reach the sink in order
}

// runBurstCase runs n generated events through c and checks that every event completes
// exactly once, that the sink got every admitted one (in order when c.ordered), and that
// nothing stays in flight.
func runBurstCase(t *testing.T, c burstCase, n int64) {
	t.Helper()
	var gen atomic.Int64
	src := pipeline.Generate(n, func(i int64, ev *stage.Event) { gen.Add(1) })
	var handled atomic.Int64
	opts := append([]pipeline.Option{pipeline.WithLogger(quiet), pipeline.WithErrorHandler(func(_ context.Context, f *stage.Failure) error {
		if !errors.Is(f.Err, pipeline.ErrTooLarge) {
			return fmt.Errorf("unexpected failure: %w", f)
		}
		handled.Add(1)
		return nil
	})}, c.opts...)
	if c.size != nil {
		opts = append(opts, pipeline.WithSize(c.size))
	}
	b := pipeline.New(src, opts...)
	var mu sync.Mutex
	var got []int64
	record := func(ev *stage.Event) {
		mu.Lock()
		got = append(got, ev.Offset)
		mu.Unlock()
	}
	pass := func(_ context.Context, ev *stage.Event) (*stage.Event, error) { return ev, nil }
	switch c.first {
	case "batch":
		s := pipeline.Then(b.Source(), stage.Batch("first", stage.BatchConfig[*stage.Event]{MaxCount: 8, Linger: 5 * time.Millisecond}))
		pipeline.To(s, stage.Sink("sink", func(_ context.Context, evs []*stage.Event) error {
			for _, ev := range evs {
				record(ev)
			}
			return nil
		}))
	case "flatmap":
		s := pipeline.Then(b.Source(), stage.FlatMap("first", func(_ context.Context, ev *stage.Event) ([]*stage.Event, error) {
			return []*stage.Event{ev}, nil
		}))
		pipeline.To(s, stage.Sink("sink", func(_ context.Context, ev *stage.Event) error { record(ev); return nil }))
	case "map-c4":
		s := pipeline.Then(b.Source(), stage.Map("first", pass, stage.WithConcurrency(4)))
		pipeline.To(s, stage.Sink("sink", func(_ context.Context, ev *stage.Event) error { record(ev); return nil }))
	case "sink":
		pipeline.To(b.Source(), stage.Sink("sink", func(_ context.Context, ev *stage.Event) error { record(ev); return nil }))
	default:
		s := pipeline.Then(b.Source(), stage.Map("first", pass))
		pipeline.To(s, stage.Sink("sink", func(_ context.Context, ev *stage.Event) error { record(ev); return nil }))
	}
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	var want []int64
	for i := int64(0); i < n; i++ {
		if c.tooBig == nil || !c.tooBig(i) {
			want = append(want, i)
		}
	}
	ok, bad := src.Completed()
	if ok+bad != uint64(gen.Load()) || gen.Load() != n || ok != uint64(n) {
		t.Fatalf("generated %d of %d, completed %d ok + %d not ok", gen.Load(), n, ok, bad)
	}
	if int64(len(got)) != int64(len(want)) || handled.Load() != n-int64(len(want)) {
		t.Fatalf("sink got %d events, error handler %d; want %d and %d", len(got), handled.Load(), len(want), n-int64(len(want)))
	}
	if c.ordered {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("sink got offset %d at %d, want %d (order)", got[i], i, want[i])
			}
		}
	}
	if st := p.Stats(); st.InFlightEvents != 0 || st.InFlightBytes != 0 {
		t.Fatalf("in flight after Run: %d events, %d bytes", st.InFlightEvents, st.InFlightBytes)
	}
}

// Generate's bursts under budgets smaller than a burst, oversized events mid-burst, and
// first stages of every kind: every event completes once, in order where the stage keeps it,
// and Run ends (no deadlock).
func TestAttackGenerateBurstsCompleteInOrder(t *testing.T) {
	const big = 1 << 20
	tooBig := func(off int64) bool { return off%37 == 5 || off%16 == 15 }
	sizeBig := func(ev *stage.Event) int64 {
		if tooBig(ev.Offset) {
			return big
		}
		return 10
	}
	cases := []burstCase{
		{name: "budget-2-events", first: "map", opts: []pipeline.Option{pipeline.WithBudget(100), pipeline.WithMaxEventBytes(40)}, size: func(*stage.Event) int64 { return 40 }, ordered: true},
		{name: "budget-15-events", first: "map", opts: []pipeline.Option{pipeline.WithBudget(150), pipeline.WithMaxEventBytes(10)}, size: func(*stage.Event) int64 { return 10 }, ordered: true},
		{name: "budget-1-event-sink-first", first: "sink", opts: []pipeline.Option{pipeline.WithBudget(10), pipeline.WithMaxEventBytes(10)}, size: func(*stage.Event) int64 { return 10 }, ordered: true},
		{name: "too-large-mid-burst", first: "map", opts: []pipeline.Option{pipeline.WithBudget(1000), pipeline.WithMaxEventBytes(10)}, size: sizeBig, tooBig: tooBig, ordered: true},
		{name: "too-large-mid-burst-sink", first: "sink", opts: []pipeline.Option{pipeline.WithBudget(1000), pipeline.WithMaxEventBytes(10)}, size: sizeBig, tooBig: tooBig, ordered: true},
		{name: "map-c4-ordered", first: "map-c4", opts: []pipeline.Option{pipeline.WithBudget(200), pipeline.WithMaxEventBytes(10)}, size: func(*stage.Event) int64 { return 10 }, ordered: true},
		{name: "flatmap", first: "flatmap", opts: []pipeline.Option{pipeline.WithBudget(200), pipeline.WithMaxEventBytes(10)}, size: func(*stage.Event) int64 { return 10 }, ordered: true},
		{name: "batch-first", first: "batch", opts: []pipeline.Option{pipeline.WithBudget(100), pipeline.WithMaxEventBytes(10)}, size: func(*stage.Event) int64 { return 10 }, ordered: true},
		{name: "window-small", first: "map", opts: []pipeline.Option{pipeline.WithBudget(10_000), pipeline.WithMaxEventBytes(10), pipeline.WithInitialWindow(30)}, size: func(*stage.Event) int64 { return 10 }, ordered: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runBurstCase(t, c, 2000) })
	}
}

// FromSlice with values larger than the budget holds in a burst: every value arrives, in
// order, with its bytes.
func TestAttackFromSliceLargeValuesInOrder(t *testing.T) {
	vals := make([][]byte, 300)
	for i := range vals {
		vals[i] = []byte(fmt.Sprintf("%05d-%s", i, make([]byte, 4096)))
	}
	src := pipeline.FromSlice(vals)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithBudget(3*5000), pipeline.WithMaxEventBytes(5000))
	var got []string
	s := pipeline.Then(b.Source(), stage.Map("first", func(_ context.Context, ev *stage.Event) (*stage.Event, error) { return ev, nil }))
	pipeline.To(s, stage.Sink("sink", func(_ context.Context, ev *stage.Event) error {
		got = append(got, string(ev.Value[:5]))
		if len(ev.Value) != len(vals[0]) {
			return fmt.Errorf("offset %d: %d bytes", ev.Offset, len(ev.Value))
		}
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ok, bad := src.Completed(); ok != uint64(len(vals)) || bad != 0 || len(got) != len(vals) {
		t.Fatalf("completed %d ok %d not ok, sink got %d; want %d", ok, bad, len(got), len(vals))
	}
	for i, g := range got {
		if g != fmt.Sprintf("%05d", i) {
			t.Fatalf("value %d is %q: out of order", i, g)
		}
	}
}

// A hard stop (the drain timeout expires while a call blocks) with bursts in flight and the
// source blocked mid-burst: Run returns, every event handed over completes exactly once, and
// at most the rest of one burst (made, never handed over) is dropped without completing.
func TestAttackGenerateHardStopMidBurst(t *testing.T) {
	var gen atomic.Int64
	src := pipeline.Generate(-1, func(int64, *stage.Event) { gen.Add(1) })
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithDrainTimeout(50*time.Millisecond), pipeline.WithBudget(1000), pipeline.WithMaxEventBytes(10),
		pipeline.WithSize(func(*stage.Event) int64 { return 10 }))
	stuck := make(chan struct{})
	var sunk atomic.Int64
	s := pipeline.Then(b.Source(), stage.Map("first", func(_ context.Context, ev *stage.Event) (*stage.Event, error) { return ev, nil }))
	pipeline.To(s, stage.Sink("sink", func(ctx context.Context, ev *stage.Event) error {
		if sunk.Add(1) == 40 {
			close(stuck)
			<-ctx.Done() // blocks until the hard stop
			return ctx.Err()
		}
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-stuck
	waitFor(t, "the source to block on the full budget", func() bool { return p.Stats().InFlightBytes >= 900 })
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the hard stop")
	}
	ok, bad := src.Completed()
	if done := ok + bad; done > uint64(gen.Load()) || uint64(gen.Load())-done >= 16 {
		t.Fatalf("generated %d, completed %d ok + %d not ok", gen.Load(), ok, bad)
	}
	if st := p.Stats(); st.InFlightEvents != 0 || st.InFlightBytes != 0 {
		t.Fatalf("in flight after Run: %d events, %d bytes", st.InFlightEvents, st.InFlightBytes)
	}
}
