package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

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

// calls counts the user calls running at once and keeps the most seen.
type calls struct {
	mu        sync.Mutex
	now, most int
}

func (c *calls) enter() {
	c.mu.Lock()
	c.now++
	c.most = max(c.most, c.now)
	c.mu.Unlock()
}

func (c *calls) leave() {
	c.mu.Lock()
	c.now--
	c.mu.Unlock()
}

func ExampleWithMaxCalls() {
	src := pipeline.Generate(40, func(i int64, ev *stage.Event) {})
	// Two stages of four workers each could run eight calls at once; the pipeline runs two.
	b := pipeline.New(src, pipeline.WithMaxCalls(2))
	var running calls
	work := func() {
		running.enter()
		defer running.leave()
		time.Sleep(time.Millisecond) // stands for a call's work
	}
	nums := pipeline.Then(b.Source(), stage.Map("parse", func(_ context.Context, ev *stage.Event) (int64, error) {
		work()
		return ev.Offset, nil
	}, stage.WithConcurrency(4)))
	pipeline.To(nums, stage.Sink("store", func(_ context.Context, n int64) error {
		work()
		return nil
	}, stage.WithConcurrency(4)))
	p, err := b.Build()
	if err != nil {
		fmt.Println("build:", err)
		return
	}
	if err := p.Run(context.Background()); err != nil {
		fmt.Println("run:", err)
		return
	}
	ok, _ := src.Completed()
	fmt.Println("completed:", ok)
	fmt.Println("at most 2 calls at once:", running.most <= 2)
	// Output:
	// completed: 40
	// at most 2 calls at once: true
}

func ExampleCollector() {
	src := pipeline.FromSlice([][]byte{[]byte("a"), []byte("b"), []byte("c")})
	b := pipeline.New(src)
	// Events are recycled after completion: collect plain values, never *stage.Event.
	upper := pipeline.Then(b.Source(), stage.Map("upper", func(_ context.Context, ev *stage.Event) (string, error) {
		return strings.ToUpper(string(ev.Value)), nil
	}))
	var got pipeline.Collector[string]
	pipeline.To(upper, got.Sink("collect"))
	p, err := b.Build()
	if err != nil {
		fmt.Println("build:", err)
		return
	}
	if err := p.Run(context.Background()); err != nil {
		fmt.Println("run:", err)
		return
	}
	fmt.Println(got.Items())
	// Output:
	// [A B C]
}
