package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

func sinkOf[T any](name string, opts ...stage.Option) *stage.Stage[T, stage.None] {
	return stage.Sink(name, func(context.Context, T) error { return nil }, opts...)
}

func mapOf(name string, opts ...stage.Option) *stage.Stage[*stage.Event, int64] {
	return stage.Map(name, offsetOf, opts...)
}

func TestBuildErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name   string
		build  func() *pipeline.Builder
		target error    // pipeline.ErrInvalid or pipeline.ErrInvalid
		want   []string // substrings naming the field or stage
	}{
		{"no sink", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1))
			pipeline.Then(b.Source(), mapOf("m"))
			return b
		}, pipeline.ErrInvalid, []string{"Sink"}},
		{"Capacity(0)", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1))
			pipeline.To(b.Source(), sinkOf[*stage.Event]("s", stage.WithCapacity(0)))
			return b
		}, pipeline.ErrInvalid, []string{"Capacity", `"s"`}},
		{"Concurrency(0)", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1))
			pipeline.To(pipeline.Then(b.Source(), mapOf("m", stage.WithConcurrency(0))), sinkOf[int64]("s"))
			return b
		}, pipeline.ErrInvalid, []string{"Concurrency", `"m"`}},
		{"duplicate names", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1))
			pipeline.To(pipeline.Then(b.Source(), mapOf("same")), sinkOf[int64]("same"))
			return b
		}, pipeline.ErrInvalid, []string{"Name", `"same"`}},
		{"budget below MaxEventBytes", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1), pipeline.WithBudget(100), pipeline.WithMaxEventBytes(101))
			pipeline.To(b.Source(), sinkOf[*stage.Event]("s"))
			return b
		}, pipeline.ErrInvalid, []string{"Budget", "MaxEventBytes"}},
		{"stream consumed twice", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1))
			nums := pipeline.Then(b.Source(), mapOf("m"))
			pipeline.To(nums, sinkOf[int64]("first"))
			pipeline.To(nums, sinkOf[int64]("second"))
			return b
		}, pipeline.ErrInvalid, []string{`"second"`, `output of "m" is already consumed`}},
		{"dangling stage", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1))
			nums := pipeline.Then(b.Source(), mapOf("m"))
			pipeline.Then(nums, stage.Map("loose", func(_ context.Context, v int64) (int64, error) { return v, nil }))
			return b // nothing consumes loose (and so there is no sink either)
		}, pipeline.ErrInvalid, []string{`"loose"`, "output is not consumed"}},
		{"Batch Concurrency(2)", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1))
			bt := pipeline.Then(pipeline.Then(b.Source(), mapOf("m")), stage.Batch("batch", stage.BatchConfig[int64]{MaxCount: 2}, stage.WithConcurrency(2)))
			pipeline.To(bt, sinkOf[[]int64]("s"))
			return b
		}, pipeline.ErrInvalid, []string{`"batch"`, "Concurrency"}},
		{"non-sink in To", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1))
			pipeline.To(b.Source(), stage.Map("m", func(context.Context, *stage.Event) (stage.None, error) { return stage.None{}, nil }))
			return b
		}, pipeline.ErrInvalid, []string{`"m"`, "To needs a sink"}},
		{"sink in Then", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1))
			pipeline.Then(b.Source(), sinkOf[*stage.Event]("s"))
			return b
		}, pipeline.ErrInvalid, []string{`"s"`, "attached with To"}},
		{"nil source", func() *pipeline.Builder {
			b := pipeline.New(nil)
			pipeline.To(b.Source(), sinkOf[*stage.Event]("s"))
			return b
		}, pipeline.ErrInvalid, []string{"Source"}},
		{"nil stage", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1))
			pipeline.To(b.Source(), (*stage.Stage[*stage.Event, stage.None])(nil))
			return b
		}, pipeline.ErrInvalid, []string{`after "source" is nil`}},
		{"options", func() *pipeline.Builder {
			b := pipeline.New(sized(1, 1), pipeline.WithName("orders"), pipeline.WithMaxEventBytes(0), pipeline.WithSize(nil),
				pipeline.WithDrainTimeout(-1), pipeline.WithCloseTimeout(0), pipeline.WithLogger(nil))
			pipeline.To(b.Source(), sinkOf[*stage.Event]("s"))
			return b
		}, pipeline.ErrInvalid, []string{`"orders"`, "MaxEventBytes", "Size", "DrainTimeout", "CloseTimeout", "Logger"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := c.build().Build()
			if p != nil || !errors.Is(err, c.target) {
				t.Fatalf("Build = %v, %v; want an error wrapping %v", p, err, c.target)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestBuildTwiceFails(t *testing.T) {
	b := pipeline.New(sized(1, 1))
	pipeline.To(b.Source(), sinkOf[*stage.Event]("s"))
	if _, err := b.Build(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Build(); !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), "Build called twice") {
		t.Fatalf("second Build = %v", err)
	}
}

func TestRunTwiceReturnsErrRunTwice(t *testing.T) {
	b := pipeline.New(sized(3, 1))
	pipeline.To(b.Source(), sinkOf[*stage.Event]("s"))
	p := build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background()); !errors.Is(err, pipeline.ErrRunTwice) {
		t.Fatalf("second Run = %v, want ErrRunTwice", err)
	}
}

// A stage runs in one pipeline: reusing it in a second one fails that pipeline's Run cleanly.
func TestStageReusedInASecondPipelineFailsRun(t *testing.T) {
	shared := sinkOf[int64]("shared")
	first := pipeline.New(sized(2, 1))
	pipeline.To(pipeline.Then(first.Source(), mapOf("m")), shared)
	if err := build(t, first).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	src := sized(2, 1)
	second := pipeline.New(src, pipeline.WithLogger(quiet))
	pipeline.To(pipeline.Then(second.Source(), mapOf("m")), shared)
	p := build(t, second)
	if err := p.Run(context.Background()); !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), "already started") {
		t.Fatalf("Run with a reused stage = %v, want pipeline.ErrInvalid naming the problem", err)
	}
	if st := p.Stats(); st.Emitted != 0 || st.InFlightEvents != 0 {
		t.Fatalf("the source ran: %+v", st)
	}
}
