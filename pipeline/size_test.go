package pipeline_test

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// The default size function counts what an event holds: key, value, header names and values,
// and the fixed per-event and per-header overhead.
func TestEventSizeCountsHeadersAndOverhead(t *testing.T) {
	ev := stage.GetEvent()
	defer ev.Release()
	if got := pipeline.EventSize(ev); got != pipeline.EventOverhead {
		t.Fatalf("EventSize of an empty event = %d, want the overhead %d", got, pipeline.EventOverhead)
	}
	ev.Key = []byte("key")
	ev.Headers = append(ev.Headers, stage.Header{Key: "trace", Value: make([]byte, 64<<10)}, stage.Header{Key: "n"})
	const payload = 3 + 5 + 64<<10 + 1
	if got := payloadSize(ev); got != payload {
		t.Fatalf("payload = %d, want %d", got, payload)
	}
	if got, want := pipeline.EventSize(ev), int64(payload+pipeline.EventOverhead+2*pipeline.HeaderOverhead); got != want {
		t.Fatalf("EventSize = %d, want %d", got, want)
	}
	ev.Key, ev.Headers = nil, ev.Headers[:0]
}

// With the default size function, events with an empty value and a 64 KiB header fill the
// budget: a blocked sink with room for all of them still sees only what the budget admits.
func TestDefaultBudgetCountsHeaders(t *testing.T) {
	const n, budget = 100, 1 << 20
	header := make([]byte, 64<<10)
	src := pipeline.Generate(n, func(_ int64, ev *stage.Event) {
		ev.Headers = append(ev.Headers, stage.Header{Key: "h", Value: header})
	})
	done := track(src)
	g := newGate()
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithBudget(budget), pipeline.WithMaxEventBytes(128<<10))
	pipeline.To(b.Source(), stage.Sink("s", func(ctx context.Context, ev *stage.Event) error { return g.pass(ctx, ev.Offset) }, stage.WithCapacity(n)))
	p := build(t, b)
	wait := start(t, context.Background(), p, g.open)

	size := int64(len(header) + 1 + pipeline.HeaderOverhead + pipeline.EventOverhead)
	fit := budget / size // 15
	g.awaitEntries(t, 1)
	waitFor(t, "the budget to fill", func() bool {
		st := p.Stats()
		if st.Emitted > uint64(fit) {
			t.Fatalf("emitted %d events of %d budget bytes with a %d budget, want at most %d", st.Emitted, size, budget, fit)
		}
		return st.Emitted == uint64(fit)
	})
	if st := p.Stats(); st.InFlightBytes != fit*size || st.InFlightEvents != fit {
		t.Fatalf("in flight %d events, %d bytes; want %d, %d", st.InFlightEvents, st.InFlightBytes, fit, fit*size)
	}
	g.open()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
}
