package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Generate's fill may point an event at shared memory. That memory must not come back from
// the event pool as the buffer of a later event, for a source that appends into it (FromSlice,
// the Kafka source) would then write into the shared memory and into other in-flight events.
func TestGenerateSharedMemoryIsNotRecycledIntoLaterEvents(t *testing.T) {
	shared := []byte("SHARED-PAYLOAD-0123456789")
	want := string(shared)
	gen := pipeline.Generate(500, func(_ int64, ev *stage.Event) { ev.Key, ev.Value = shared[:6], shared })
	b := pipeline.New(gen)
	pipeline.To(b.Source(), stage.Sink("drop", func(context.Context, *stage.Event) error { return nil }, stage.WithConcurrency(4)))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}

	var values [][]byte
	for i := range 500 {
		values = append(values, fmt.Appendf(nil, "value-%03d", i))
	}
	b = pipeline.New(pipeline.FromSlice(values))
	strs := pipeline.Then(b.Source(), stage.Map("string", func(_ context.Context, ev *stage.Event) (string, error) {
		return string(ev.Key) + string(ev.Value), nil
	}, stage.WithConcurrency(4)))
	var got pipeline.Collector[string]
	pipeline.To(strs, got.Sink("collect"))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if string(shared) != want {
		t.Fatalf("the shared payload was overwritten through a recycled event: %q", shared)
	}
	items := got.Items()
	for i, v := range items {
		if v != string(values[i]) {
			t.Fatalf("event %d carried %q, want %q", i, v, values[i])
		}
	}
	if len(items) != len(values) {
		t.Fatalf("got %d values, want %d", len(items), len(values))
	}
}

func TestFromSliceToChanSinkWithCustomSize(t *testing.T) {
	values := [][]byte{[]byte("alpha"), []byte("beta"), []byte("gamma")}
	src := pipeline.FromSlice(values)
	done := track(src)
	out := make(chan string, len(values))
	var p *pipeline.Pipeline // set before Run
	var held []int64         // budget bytes in flight while each event is processed
	b := pipeline.New(src, pipeline.WithSize(func(*stage.Event) int64 { return 1 }), pipeline.WithBudget(1), pipeline.WithMaxEventBytes(1))
	words := pipeline.Then(b.Source(), stage.Map("string", func(_ context.Context, ev *stage.Event) (string, error) {
		held = append(held, p.Stats().InFlightBytes) // one worker
		return string(ev.Value), nil
	}))
	pipeline.To(words, pipeline.ChanSink("chan", out))
	p = build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(out)
	var got []string
	for w := range out {
		got = append(got, w)
	}
	if !slices.Equal(got, []string{"alpha", "beta", "gamma"}) {
		t.Fatalf("got %v", got)
	}
	done.allOKOnce(t, 3)
	if len(held) != 3 || held[0] != 1 || p.Stats().HighWaterBytes != 1 {
		t.Fatalf("bytes in flight %v, high water %d; want the custom size 1", held, p.Stats().HighWaterBytes)
	}
}

// Generate hands its events over in bursts of 16: when the pipeline stops mid-burst, every
// event handed over completes exactly once, and the events made but not handed over yet (the
// rest of one burst) are dropped without completing.
func TestGenerateStoppedMidBurstCompletesEveryGeneratedEvent(t *testing.T) {
	for _, stopAt := range []int64{1, 7, 100, 1000} {
		var fills atomic.Int64
		src := pipeline.Generate(-1, func(i int64, ev *stage.Event) { fills.Add(1) })
		ctx, cancel := context.WithCancel(context.Background())
		var sunk atomic.Int64
		b := pipeline.New(src, pipeline.WithLogger(quiet))
		s := pipeline.Then(b.Source(), stage.Map("pass", func(_ context.Context, ev *stage.Event) (*stage.Event, error) { return ev, nil }))
		pipeline.To(s, stage.Sink("sink", func(_ context.Context, ev *stage.Event) error {
			if sunk.Add(1) == stopAt {
				cancel()
			}
			return nil
		}))
		p, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		ok, bad := src.Completed()
		if done := ok + bad; done > uint64(fills.Load()) || uint64(fills.Load())-done >= 16 || bad > 1 || ok < uint64(stopAt) {
			t.Fatalf("stop at %d: generated %d, completed %d ok + %d not ok", stopAt, fills.Load(), ok, bad)
		}
		if st := p.Stats(); st.InFlightEvents != 0 || st.InFlightBytes != 0 {
			t.Fatalf("stop at %d: in flight after Run: %d events, %d bytes", stopAt, st.InFlightEvents, st.InFlightBytes)
		}
	}
}
