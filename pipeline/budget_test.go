package pipeline_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

func TestBudgetNeverExceededUnderConcurrentLoad(t *testing.T) {
	const (
		n      = 3000
		budget = 2048
		maxEv  = 256
	)
	rng := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, maxEv)
	src := pipeline.Generate(n, func(_ int64, ev *stage.Event) { ev.Value = payload[:1+rng.IntN(maxEv)] })
	done := track(src)
	var p *pipeline.Pipeline // set before Run; read by the stages
	check := func() {
		if st := p.Stats(); st.InFlightBytes > st.BudgetBytes || st.InFlightBytes < 0 {
			in, lim := st.InFlightBytes, st.BudgetBytes
			t.Errorf("budget holds %d bytes, limit %d", in, lim)
		}
	}
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithBudget(budget), pipeline.WithMaxEventBytes(maxEv))
	nums := pipeline.Then(b.Source(), stage.Map("spread", func(ctx context.Context, ev *stage.Event) (int64, error) {
		check()
		runtime.Gosched()
		return ev.Offset, nil
	}, stage.WithConcurrency(8), stage.WithUnordered(), stage.WithCapacity(4)))
	kids := pipeline.Then(nums, stage.FlatMap("twice", func(_ context.Context, v int64) ([]int64, error) {
		check()
		return []int64{v, v}, nil
	}, stage.WithConcurrency(4)))
	batches := pipeline.Then(kids, stage.Batch("batch", stage.BatchConfig[int64]{MaxBytes: 600, Linger: time.Millisecond}))
	pipeline.To(batches, stage.Sink("sink", func(context.Context, []int64) error {
		check()
		runtime.Gosched()
		return nil
	}, stage.WithConcurrency(8)))
	p = build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	done.allOKOnce(t, n)
	st := p.Stats()
	if st.HighWaterBytes > budget || st.HighWaterBytes < budget/2 {
		t.Fatalf("high water %d bytes, budget %d: want it reached (above half), never exceeded", st.HighWaterBytes, budget)
	}
	if st.InFlightBytes != 0 || st.InFlightEvents != 0 || st.Completed != n || st.Failed != 0 {
		t.Fatalf("after Run: %+v", st)
	}
}
