package pipeline_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// TestSmokeOrderedFlatMapBatch runs ordered FlatMap and Batch stages end to end in pool debug
// mode (a misuse panics where it is detected). The mode is restored afterwards, so the rest
// of the package runs with the production setting whatever the test order, and the test also
// checks that no misuse was counted: a panic inside a stage call is recovered as a stage
// error and would not fail the test by itself.
func TestSmokeOrderedFlatMapBatch(t *testing.T) {
	was := pool.Debug()
	pool.SetDebug(true)
	t.Cleanup(func() { pool.SetDebug(was) })
	misuses := pool.DoubleReleases()
	const n = 1000
	src := pipeline.Generate(n, func(i int64, ev *stage.Event) { ev.Value = []byte(strconv.FormatInt(i, 10)) })
	b := pipeline.New(src)
	nums := pipeline.Then(b.Source(), stage.Map("parse", func(_ context.Context, ev *stage.Event) (int, error) {
		return strconv.Atoi(string(ev.Value))
	}, stage.WithConcurrency(8)))
	two := pipeline.Then(nums, stage.FlatMap("dup", func(_ context.Context, v int) ([]int, error) { return []int{v, v}, nil }, stage.WithConcurrency(4)))
	batches := pipeline.Then(two, stage.Batch("batch", stage.BatchConfig[int]{MaxCount: 7, Linger: time.Millisecond}))
	var got pipeline.Collector[[]int]
	pipeline.To(batches, got.Sink("sink"))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var flat []int
	for _, bt := range got.Items() {
		flat = append(flat, bt...)
	}
	if len(flat) != 2*n {
		t.Fatalf("got %d values, want %d", len(flat), 2*n)
	}
	for i, v := range flat {
		if v != i/2 {
			t.Fatalf("value %d = %d, want %d (order)", i, v, i/2)
		}
	}
	if ok, bad := src.Completed(); ok != n || bad != 0 {
		t.Fatalf("completed ok=%d bad=%d", ok, bad)
	}
	if st := p.Stats(); st.InFlightBytes != 0 || st.InFlightEvents != 0 {
		t.Fatalf("left in flight: %+v", st)
	}
	if d := pool.DoubleReleases() - misuses; d != 0 {
		t.Fatalf("%d misuses of pooled objects detected", d)
	}
}
