package pipeline_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

func ExampleNew() {
	words := []string{"apple", "kiwi", "banana", "fig", "cherry"}
	src := pipeline.Generate(int64(len(words)), func(i int64, ev *stage.Event) {
		ev.Value = []byte(words[i])
	})
	b := pipeline.New(src, pipeline.WithBudget(1<<20), pipeline.WithMaxEventBytes(1<<10))
	// Events are recycled after completion: the first stage maps them to plain values.
	upper := pipeline.Then(b.Source(), stage.Map("upper", func(_ context.Context, ev *stage.Event) (string, error) {
		return strings.ToUpper(string(ev.Value)), nil
	}, stage.WithConcurrency(1)))
	long := pipeline.Then(upper, stage.Filter("long", func(_ context.Context, w string) (bool, error) {
		return len(w) > 4, nil
	}, stage.WithConcurrency(1)))
	pipeline.To(long, stage.Sink("print", func(_ context.Context, w string) error {
		fmt.Println(w)
		return nil
	}, stage.WithConcurrency(1)))

	p, err := b.Build()
	if err != nil {
		fmt.Println("build:", err)
		return
	}
	if err := p.Run(context.Background()); err != nil {
		fmt.Println("run:", err)
		return
	}
	ok, failed := src.Completed()
	fmt.Printf("completed %d, failed %d\n", ok, failed)
	// Output:
	// APPLE
	// BANANA
	// CHERRY
	// completed 5, failed 0
}
