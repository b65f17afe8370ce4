package pipeline_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

func TestStatsCountersAddUpAfterARun(t *testing.T) {
	const n = 60
	errOdd := errors.New("odd")
	var handled int
	src := sized(n, 3)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithName("stats"),
		pipeline.WithErrorHandler(func(context.Context, *stage.Failure) error { handled++; return nil }))
	nums := pipeline.Then(b.Source(), stage.Map("decode", func(_ context.Context, ev *stage.Event) (int64, error) {
		if ev.Offset%2 == 1 {
			return 0, errOdd
		}
		return ev.Offset, nil
	}, stage.WithRetry(stage.Retry{Retries: 1, Backoff: 0, MaxBackoff: 0})))
	kept := pipeline.Then(nums, stage.Filter("keep", func(_ context.Context, v int64) (bool, error) { return v%4 != 0, nil }))
	pipeline.To(kept, stage.Sink("sink", func(context.Context, int64) error { return nil }, stage.WithConcurrency(2)))
	p := build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Name != "stats" || len(st.Stages) != 3 || st.Stages[0].Name != "decode" || st.Stages[2].Name != "sink" {
		t.Fatalf("snapshot %+v", st)
	}
	const odd, even, multipleOf4 = n / 2, n / 2, n / 4
	decode, keep, sink := st.Stages[0], st.Stages[1], st.Stages[2]
	want := []struct {
		name                            string
		got                             stage.Stats
		in, out, errs, retries, handled uint64
	}{
		{"decode", decode, n, even, 2 * odd, odd, odd},
		// A message the filter drops is counted in Filtered, not Out.
		{"keep", keep, even, even - multipleOf4, 0, 0, 0},
		{"sink", sink, even - multipleOf4, even - multipleOf4, 0, 0, 0},
	}
	for _, w := range want {
		g := w.got
		if g.In != w.in || g.Out != w.out || g.Errors != w.errs || g.Retries != w.retries || g.Handled != w.handled {
			t.Errorf("%s: In %d Out %d Errors %d Retries %d Handled %d; want %d %d %d %d %d",
				w.name, g.In, g.Out, g.Errors, g.Retries, g.Handled, w.in, w.out, w.errs, w.retries, w.handled)
		}
		if g.In != g.Out+g.Filtered+g.Handled || g.QueueLen != 0 || g.Panics != 0 {
			t.Errorf("%s: In %d != Out %d + Filtered %d + Handled %d, or queue %d / panics %d left", w.name, g.In, g.Out, g.Filtered, g.Handled, g.QueueLen, g.Panics)
		}
	}
	if decode.Out != keep.In || handled != odd {
		t.Errorf("decode Out %d, keep In %d, handler calls %d", decode.Out, keep.In, handled)
	}
	if sink.Kind != stage.KindSink || sink.Concurrency != 2 || sink.QueueCap != 64 {
		t.Errorf("sink stats %+v", sink)
	}
	if st.Emitted != n || st.Completed != n || st.Failed != 0 || st.InFlightEvents != 0 || st.InFlightBytes != 0 ||
		st.BudgetBytes != pipeline.DefaultInFlightBudget || st.HighWaterBytes == 0 || st.TooLarge != 0 {
		t.Errorf("pipeline snapshot %+v", st)
	}
}

// The slow stage is blocked and its input queue full; the budget keeps the stage before it
// from backing up, so the slow stage is the only candidate.
func TestBottleneckNamesTheBlockedStage(t *testing.T) {
	const slowCap = 4
	src := sized(40, 1)
	g := newGate()
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithSize(payloadSize), pipeline.WithBudget(10), pipeline.WithMaxEventBytes(1))
	fast := pipeline.Then(b.Source(), stage.Map("fast", offsetOf))
	slow := pipeline.Then(fast, stage.Map("slow", func(ctx context.Context, v int64) (int64, error) {
		return v, g.pass(ctx, v)
	}, stage.WithCapacity(slowCap)))
	pipeline.To(slow, stage.Sink("sink", func(context.Context, int64) error { return nil }))
	p := build(t, b)
	prev := p.Stats()
	if name, _ := pipeline.Bottleneck(prev, prev, time.Second); name != "" {
		t.Fatalf("Bottleneck before Run = %q", name)
	}
	began := time.Now()
	wait := start(t, context.Background(), p, g.open)

	g.awaitEntries(t, 1)
	waitFor(t, "the slow stage's queue full and the budget exhausted", func() bool {
		st := p.Stats()
		return stageStats(t, st, "slow").QueueLen == slowCap && st.InFlightBytes == 10
	})
	cur := p.Stats()
	if q := stageStats(t, cur, "fast").QueueLen; q*2 >= 64 {
		t.Fatalf("fast's queue holds %d: the budget should keep it under half full", q)
	}
	if name, _ := pipeline.Bottleneck(prev, cur, time.Since(began)); name != "slow" {
		t.Fatalf("Bottleneck = %q, want %q", name, "slow")
	}
	// The slow stage's only call has not returned: its busy time counts it as it runs.
	busy := stageStats(t, cur, "slow").Busy
	if later := stageStats(t, p.Stats(), "slow").Busy; busy <= 0 || later <= busy {
		t.Fatalf("the stage stuck in its function shows busy %v, then %v: want > 0 and growing", busy, later)
	}

	g.open()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if name, _ := pipeline.Bottleneck(cur, p.Stats(), time.Second); name != "" {
		t.Fatalf("Bottleneck after the run = %q, want none", name)
	}
}

func TestBottleneckPicksTheBusiestBackedUpStage(t *testing.T) {
	stats := func(name string, busy time.Duration, conc, qlen, qcap int) stage.Stats {
		return stage.Stats{Name: name, Busy: busy, Concurrency: conc, QueueLen: qlen, QueueCap: qcap}
	}
	prev := pipeline.Snapshot{Stages: []stage.Stats{
		stats("a", 0, 1, 0, 10), stats("b", 0, 1, 0, 10), stats("c", 0, 2, 0, 10), stats("d", 0, 1, 0, 10),
	}}
	cur := pipeline.Snapshot{Stages: []stage.Stats{
		stats("a", 900*time.Millisecond, 1, 4, 10),   // busiest, but its queue is under half full
		stats("b", 300*time.Millisecond, 1, 5, 10),   // backed up, 30% busy
		stats("c", 1600*time.Millisecond, 2, 10, 10), // backed up, 80% busy over 2 workers
		stats("d", 500*time.Millisecond, 1, 10, 10),  // backed up, 50% busy
	}}
	name, busy := pipeline.Bottleneck(prev, cur, time.Second)
	if name != "c" || busy < 0.79 || busy > 0.81 {
		t.Fatalf("Bottleneck = %q, %.2f; want c, 0.80", name, busy)
	}
	if name, _ := pipeline.Bottleneck(pipeline.Snapshot{}, cur, time.Second); name != "" {
		t.Fatalf("Bottleneck without a previous snapshot of the stages = %q", name)
	}
	if r := pipeline.BusyRatio(prev.Stages[2], cur.Stages[2], 0); r != 0 {
		t.Fatalf("BusyRatio over no time = %v", r)
	}
	if r := pipeline.BusyRatio(stage.Stats{}, stage.Stats{Busy: time.Second}, time.Second); r != 0 {
		t.Fatalf("BusyRatio of a stage without workers = %v", r)
	}
}
