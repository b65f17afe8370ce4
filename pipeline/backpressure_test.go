package pipeline_test

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// With a blocked sink, the events in flight are bounded by where they can be: one held by the
// source (emitted, blocked on the full first edge), each edge's capacity, and one per worker.
// Events are 1 byte, so the budget's high-water mark is the most events ever in flight.
func TestBackpressureBlockedSinkBoundsEmittedByCapacities(t *testing.T) {
	const (
		n                = 60
		mapCap, mapConc  = 3, 1
		sinkCap, sinkCon = 4, 2
		bound            = 1 + mapCap + mapConc + sinkCap + sinkCon // 11
	)
	src := sized(n, 1)
	done := track(src)
	g := newGate()
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithSize(payloadSize))
	nums := pipeline.Then(b.Source(), stage.Map("a", offsetOf, stage.WithCapacity(mapCap), stage.WithConcurrency(mapConc)))
	pipeline.To(nums, stage.Sink("s", g.pass, stage.WithCapacity(sinkCap), stage.WithConcurrency(sinkCon)))
	p := build(t, b)
	wait := start(t, context.Background(), p, g.open)

	g.awaitEntries(t, sinkCon)
	waitFor(t, "every queue full and the source blocked", func() bool {
		st := p.Stats()
		if st.Emitted > bound {
			t.Fatalf("emitted %d events with a blocked sink, bound %d", st.Emitted, bound)
		}
		return st.Emitted == bound && stageStats(t, st, "a").QueueLen == mapCap && stageStats(t, st, "s").QueueLen == sinkCap
	})
	st := p.Stats()
	if a := stageStats(t, st, "a"); a.In != mapConc+sinkCap+sinkCon || a.Out != sinkCap+sinkCon {
		t.Fatalf("stage a: In %d Out %d; want %d and %d", a.In, a.Out, mapConc+sinkCap+sinkCon, sinkCap+sinkCon)
	}
	if st.InFlightEvents != bound || st.InFlightBytes != bound || st.Completed != 0 {
		t.Fatalf("in flight %d events, %d bytes, completed %d; want %d, %d, 0", st.InFlightEvents, st.InFlightBytes, st.Completed, bound, bound)
	}

	g.open()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	if st := p.Stats(); st.HighWaterBytes != bound || st.InFlightBytes != 0 {
		t.Fatalf("high water %d events, in flight %d bytes after Run; want %d and 0", st.HighWaterBytes, st.InFlightBytes, bound)
	}
}

// An ordered stage with Concurrency c holds at most 3c+2 messages: one per worker, one in each
// worker's input and output slot, plus its dispatcher and collector.
func TestBackpressureOrderedStageBound(t *testing.T) {
	const (
		n                = 80
		conc, ordCap     = 3, 2
		sinkCap, sinkCon = 2, 1
		bound            = 1 + ordCap + 3*conc + 2 + sinkCap + sinkCon // 17
		lower            = 1 + ordCap + sinkCap + sinkCon              // the queues alone
	)
	src := sized(n, 1)
	done := track(src)
	g := newGate()
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithSize(payloadSize))
	nums := pipeline.Then(b.Source(), stage.Map("ordered", offsetOf, stage.WithCapacity(ordCap), stage.WithConcurrency(conc)))
	pipeline.To(nums, stage.Sink("s", g.pass, stage.WithCapacity(sinkCap), stage.WithConcurrency(sinkCon)))
	p := build(t, b)
	wait := start(t, context.Background(), p, g.open)

	g.awaitEntries(t, sinkCon)
	waitFor(t, "both queues full", func() bool {
		st := p.Stats()
		if st.Emitted > bound {
			t.Fatalf("emitted %d events with a blocked sink, bound %d", st.Emitted, bound)
		}
		return stageStats(t, st, "ordered").QueueLen == ordCap && stageStats(t, st, "s").QueueLen == sinkCap
	})
	st := p.Stats()
	if st.Emitted > bound || st.Emitted < lower || st.Completed != 0 {
		t.Fatalf("emitted %d, completed %d with a blocked sink; want %d..%d and 0", st.Emitted, st.Completed, lower, bound)
	}
	// The structural bound is for the blocked pipeline; once it flows, a sink run's collected
	// completions release their bytes at the run's end, so the high water is read here.
	if hw := st.HighWaterBytes; hw > bound || hw < lower {
		t.Fatalf("at most %d events were in flight at once with a blocked sink, want %d..%d", hw, lower, bound)
	}
	g.open()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
}

// The budget bounds the source too: with 10-byte events and a 50-byte budget, five events are
// in flight, far below what the capacities would allow.
func TestBackpressureBudgetBoundsEmitted(t *testing.T) {
	const (
		n         = 30
		size      = 10
		budget    = 50
		maxEvents = budget / size
	)
	src := sized(n, size)
	done := track(src)
	g := newGate()
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithSize(payloadSize), pipeline.WithBudget(budget), pipeline.WithMaxEventBytes(size))
	nums := pipeline.Then(b.Source(), stage.Map("a", offsetOf))
	pipeline.To(nums, stage.Sink("s", g.pass))
	p := build(t, b)
	wait := start(t, context.Background(), p, g.open)

	g.awaitEntries(t, 1)
	waitFor(t, "the budget exhausted", func() bool {
		st := p.Stats()
		if st.Emitted > maxEvents || st.InFlightBytes > budget {
			t.Fatalf("emitted %d events holding %d bytes, budget %d bytes", st.Emitted, st.InFlightBytes, budget)
		}
		return st.InFlightBytes == budget
	})
	if st := p.Stats(); st.Emitted != maxEvents || st.InFlightEvents != maxEvents {
		t.Fatalf("emitted %d, in flight %d; want exactly %d", st.Emitted, st.InFlightEvents, maxEvents)
	}
	g.open()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	if st := p.Stats(); st.HighWaterBytes != budget || st.InFlightBytes != 0 || st.Emitted != n {
		t.Fatalf("high water %d, in flight %d, emitted %d; want %d, 0, %d", st.HighWaterBytes, st.InFlightBytes, st.Emitted, budget, n)
	}
}
