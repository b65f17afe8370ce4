package stage_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

func ExampleBatch() {
	src := pipeline.Generate(7, func(i int64, ev *stage.Event) {})
	b := pipeline.New(src)
	nums := pipeline.Then(b.Source(), stage.Map("offset", func(_ context.Context, ev *stage.Event) (int64, error) {
		return ev.Offset, nil
	}))
	// Groups of three; the last, partial batch is flushed when the stream ends.
	batches := pipeline.Then(nums, stage.Batch("by3", stage.BatchConfig[int64]{MaxCount: 3}))
	pipeline.To(batches, stage.Sink("print", func(_ context.Context, batch []int64) error {
		fmt.Println(batch)
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		panic(err)
	}
	if err := p.Run(context.Background()); err != nil {
		panic(err)
	}
	ok, _ := src.Completed()
	fmt.Println("completed:", ok)
	// Output:
	// [0 1 2]
	// [3 4 5]
	// [6]
	// completed: 7
}

func ExampleFlatMap() {
	src := pipeline.FromSlice([][]byte{[]byte("to be"), []byte(""), []byte("or not")})
	b := pipeline.New(src)
	words := pipeline.Then(b.Source(), stage.FlatMap("words", func(_ context.Context, ev *stage.Event) ([]string, error) {
		return strings.Fields(string(ev.Value)), nil // no words: the event just completes
	}))
	pipeline.To(words, stage.Sink("print", func(_ context.Context, w string) error {
		fmt.Println(w)
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		panic(err)
	}
	if err := p.Run(context.Background()); err != nil {
		panic(err)
	}
	ok, _ := src.Completed()
	fmt.Println("completed:", ok)
	// Output:
	// to
	// be
	// or
	// not
	// completed: 3
}
