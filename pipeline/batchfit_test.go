package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// batchBuilder wires source → offset → batch(bc) → sink with the given budget and largest
// event.
func batchBuilder(budget, maxEvent int64, bc stage.BatchConfig[int64]) *pipeline.Builder {
	b := pipeline.New(sized(1, 1), pipeline.WithLogger(quiet), pipeline.WithBudget(budget), pipeline.WithMaxEventBytes(maxEvent))
	batches := pipeline.Then(pipeline.Then(b.Source(), mapOf("offset")), stage.Batch("batch", bc))
	pipeline.To(batches, sinkOf[[]int64]("sink"))
	return b
}

// A Batch without Linger that might never fill within the budget is rejected by Build, naming
// the stage and the field; what can fill (or has a Linger) builds.
func TestBuildRejectsBatchThatCannotFillTheBudget(t *testing.T) {
	bySize := func(int64) int64 { return 1 }
	const budget, maxEvent = 1000, 100 // room for 10 events of maxEvent
	rejected := []struct {
		name string
		bc   stage.BatchConfig[int64]
		want []string
	}{
		{"MaxCount above budget/MaxEventBytes", stage.BatchConfig[int64]{MaxCount: 11}, []string{"MaxCount 11", "at most 10", "Linger"}},
		{"MaxBytes above the budget", stage.BatchConfig[int64]{MaxCount: 5, MaxBytes: 1001}, []string{"MaxBytes 1001", "at most 900", "Linger"}},
		{"MaxBytes without room for one more event", stage.BatchConfig[int64]{MaxBytes: 901}, []string{"MaxBytes 901", "at most 900"}},
		{"MaxBytes with a custom Size", stage.BatchConfig[int64]{MaxBytes: 10, Size: bySize}, []string{"MaxBytes", "custom Size", "MaxCount to at most 10"}},
		{"neither limit fills", stage.BatchConfig[int64]{MaxCount: 64, MaxBytes: 950}, []string{"MaxCount 64", "MaxBytes to at most 900"}},
	}
	for _, c := range rejected {
		t.Run(c.name, func(t *testing.T) {
			_, err := batchBuilder(budget, maxEvent, c.bc).Build()
			if err == nil {
				t.Fatal("Build succeeded")
			}
			if !errors.Is(err, pipeline.ErrInvalid) || !errors.Is(err, pipeline.ErrInvalid) {
				t.Fatalf("error %v wraps neither pipeline.ErrInvalid nor pipeline.ErrInvalid", err)
			}
			for _, w := range append(c.want, `stage "batch"`, "BatchConfig.") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	accepted := []struct {
		name string
		bc   stage.BatchConfig[int64]
	}{
		{"MaxCount × MaxEventBytes equals the budget", stage.BatchConfig[int64]{MaxCount: 10}},
		{"MaxBytes leaves room for one event", stage.BatchConfig[int64]{MaxCount: 64, MaxBytes: 900}},
		{"custom Size, MaxCount fits", stage.BatchConfig[int64]{MaxCount: 10, MaxBytes: 10, Size: bySize}},
		{"Linger", stage.BatchConfig[int64]{MaxCount: 64, MaxBytes: 5000, Linger: time.Millisecond}},
	}
	for _, c := range accepted {
		t.Run(c.name, func(t *testing.T) {
			if _, err := batchBuilder(budget, maxEvent, c.bc).Build(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The defaults (64 MiB budget, 1 MiB events) hold 64 events of the largest size: the
	// issue's MaxCount 64 fits only with smaller events.
	if _, err := batchBuilder(pipeline.DefaultInFlightBudget/2, pipeline.DefaultMaxEventBytes, stage.BatchConfig[int64]{MaxCount: 64}).Build(); err == nil || !strings.Contains(err.Error(), "MaxCount 64") {
		t.Fatalf("MaxCount 64 of 1 MiB events in 32 MiB: Build error %v, want one naming MaxCount", err)
	}
}

// collectBatches is a sink that records the length of every batch.
type collectBatches struct {
	mu    sync.Mutex
	sizes []int
}

func (c *collectBatches) sink() *stage.Stage[[]int64, stage.None] {
	return stage.Sink("sink", func(_ context.Context, b []int64) error {
		c.mu.Lock()
		c.sizes = append(c.sizes, len(b))
		c.mu.Unlock()
		return nil
	})
}

func (c *collectBatches) all() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.sizes...)
}

// Events larger than MaxEventBytes (Build vouched for 100 events of 10 bytes) fill the budget
// with 20 of them: the source waits in Emit for budget the partial batch holds. The stall
// flushes the partial batch, and every event completes.
func TestBatchWithoutLingerFlushedWhenEmitWaitsForBudget(t *testing.T) {
	const n = 200
	src := sized(n, 50)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithBudget(1000), pipeline.WithMaxEventBytes(10), pipeline.WithSize(payloadSize), pipeline.WithDrainTimeout(100*time.Millisecond))
	var got collectBatches
	batches := pipeline.Then(pipeline.Then(b.Source(), mapOf("offset")), stage.Batch("batch", stage.BatchConfig[int64]{MaxCount: 100}))
	pipeline.To(batches, got.sink())
	p := build(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	wait := start(t, ctx, p, cancel)
	waitFor(t, "every event to complete (a partial batch flushed on the stall)", func() bool { return p.Stats().Completed == n })
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	total := 0
	for _, s := range got.all() {
		if s > 20 {
			t.Fatalf("a batch of %d events of 50 bytes in a 1000-byte budget", s)
		}
		total += s
	}
	if total != n {
		t.Fatalf("batches hold %d events, want %d", total, n)
	}
}

// While an event is still in flight outside the batch (held in a stage before it), a stalled
// source does not flush the partial batch: it will fill once that event moves. Every batch has
// MaxCount events.
func TestStallDoesNotFlushWhileEventsMove(t *testing.T) {
	const n, count = 30, 10
	src := sized(n, 100) // the 1000-byte budget holds exactly one batch
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithBudget(1000), pipeline.WithMaxEventBytes(100), pipeline.WithSize(payloadSize))
	g := newGate()
	held := pipeline.Then(b.Source(), stage.Map("hold5", func(ctx context.Context, ev *stage.Event) (int64, error) {
		if ev.Offset == 5 {
			if err := g.pass(ctx, ev.Offset); err != nil {
				return 0, err
			}
		}
		return ev.Offset, nil
	}))
	var got collectBatches
	pipeline.To(pipeline.Then(held, stage.Batch("batch", stage.BatchConfig[int64]{MaxCount: count})), got.sink())
	p := build(t, b)
	wait := start(t, context.Background(), p, g.open)
	g.awaitEntries(t, 1)
	waitFor(t, "the batch to hold offsets 0-4 and the source to wait for budget", func() bool {
		st := p.Stats()
		return st.Emitted == count && stageStats(t, st, "batch").In == 5
	})
	// A negative: the source reports a stall every 10 ms while it waits; 30 of them must not
	// flush the five events while offset 5 is still in flight.
	time.Sleep(300 * time.Millisecond)
	if s := got.all(); len(s) != 0 {
		t.Fatalf("batches %v flushed while an event was in flight before the batch", s)
	}
	g.open()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	for _, s := range got.all() {
		if s != count {
			t.Fatalf("batch sizes %v, want every batch of %d", got.all(), count)
		}
	}
}
