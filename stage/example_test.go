package stage_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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

func ExampleMap() {
	src := pipeline.FromSlice([][]byte{[]byte("3"), []byte("1"), []byte("4"), []byte("1"), []byte("5")})
	b := pipeline.New(src)
	// Four calls at once; the output keeps the input order (WithUnordered would not).
	squares := pipeline.Then(b.Source(), stage.Map("square", func(_ context.Context, ev *stage.Event) (int, error) {
		n, err := strconv.Atoi(string(ev.Value)) // read the event's bytes during the call only
		return n * n, err
	}, stage.WithConcurrency(4)))
	pipeline.To(squares, stage.Sink("print", func(_ context.Context, n int) error {
		fmt.Println(n)
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		panic(err)
	}
	if err := p.Run(context.Background()); err != nil {
		panic(err)
	}
	// Output:
	// 9
	// 1
	// 16
	// 1
	// 25
}

func ExampleFilter() {
	src := pipeline.Generate(10, func(i int64, ev *stage.Event) {})
	b := pipeline.New(src)
	nums := pipeline.Then(b.Source(), stage.Map("offset", func(_ context.Context, ev *stage.Event) (int64, error) {
		return ev.Offset, nil
	}))
	even := stage.Filter("even", func(_ context.Context, n int64) (bool, error) {
		return n%2 == 0, nil
	})
	pipeline.To(pipeline.Then(nums, even), stage.Sink("print", func(_ context.Context, n int64) error {
		fmt.Println(n)
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		panic(err)
	}
	if err := p.Run(context.Background()); err != nil {
		panic(err)
	}
	// A dropped input counts as processed: its event completes (and would be committed).
	ok, _ := src.Completed()
	fmt.Println("filtered:", even.Stats().Filtered, "completed:", ok)
	// Output:
	// 0
	// 2
	// 4
	// 6
	// 8
	// filtered: 5 completed: 10
}

func ExampleSink() {
	src := pipeline.FromSlice([][]byte{[]byte("b=2"), []byte("a=1"), []byte("c=3"), []byte("a=4")})
	b := pipeline.New(src)
	// A key-value store written by four workers at once (sinks are unordered), with a close
	// hook that runs once at shutdown, after the workers exited.
	var mu sync.Mutex
	store := map[string]string{}
	pipeline.To(b.Source(), stage.Sink("store", func(_ context.Context, ev *stage.Event) error {
		k, v, ok := strings.Cut(string(ev.Value), "=") // string() copies: the store may keep it
		if !ok {
			return errors.New("not key=value")
		}
		mu.Lock()
		defer mu.Unlock()
		if v > store[k] {
			store[k] = v
		}
		return nil
	}, stage.WithConcurrency(4), stage.WithClose(func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		fmt.Println("store closed with", len(store), "keys")
		return nil
	})))
	p, err := b.Build()
	if err != nil {
		panic(err)
	}
	if err := p.Run(context.Background()); err != nil {
		panic(err)
	}
	for _, k := range slices.Sorted(maps.Keys(store)) {
		fmt.Println(k, store[k])
	}
	// Output:
	// store closed with 3 keys
	// a 4
	// b 2
	// c 3
}

// sender is a stand-in for an asynchronous client (a Kafka producer): Send queues a value and
// returns at once; a goroutine of its own "delivers" it later and reports through the Done.
type sender struct {
	queue  chan sent
	exited chan struct{}
}

type sent struct {
	v    string
	done stage.Done
}

func newSender() *sender {
	s := &sender{queue: make(chan sent, 16), exited: make(chan struct{})}
	go func() {
		defer close(s.exited)
		for m := range s.queue {
			fmt.Println("delivered", m.v)
			m.done.Ack() // from another goroutine than the sink's worker
		}
	}()
	return s
}

// Send hands v over, or returns an error (the sink's error policy applies) if ctx ends first.
func (s *sender) Send(ctx context.Context, v string, done stage.Done) error {
	select {
	case s.queue <- sent{v, done}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush waits until every value handed over was delivered (every Done ended).
func (s *sender) Flush(ctx context.Context) error {
	close(s.queue)
	select {
	case <-s.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func ExampleAsyncSink() {
	src := pipeline.FromSlice([][]byte{[]byte("x"), []byte("y"), []byte("z")})
	b := pipeline.New(src)
	words := pipeline.Then(b.Source(), stage.Map("copy", func(_ context.Context, ev *stage.Event) (string, error) {
		return string(ev.Value), nil // the sender keeps it beyond the call: copy
	}))
	s := newSender()
	// The event behind each word completes when its Done is acked, not when Send returns.
	pipeline.To(words, stage.AsyncSink("send", s.Send, stage.WithClose(func(ctx context.Context) error {
		err := s.Flush(ctx) // ends every outstanding Done before the source's final commit
		fmt.Println("flushed")
		return err
	})))
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
	// delivered x
	// delivered y
	// delivered z
	// flushed
	// completed: 3
}

func ExampleWithRetry() {
	src := pipeline.FromSlice([][]byte{[]byte("alice"), []byte("bob")})
	b := pipeline.New(src)
	// A flaky lookup: the first attempt for each name fails, the second succeeds.
	tried := map[string]bool{}
	lookup := stage.Map("lookup", func(_ context.Context, ev *stage.Event) (string, error) {
		name := string(ev.Value)
		if !tried[name] {
			tried[name] = true
			return "", fmt.Errorf("lookup %s: temporarily unavailable", name)
		}
		return name + ": found", nil
	}, stage.WithRetry(stage.Retry{Retries: 2, Backoff: time.Millisecond}))
	pipeline.To(pipeline.Then(b.Source(), lookup), stage.Sink("print", func(_ context.Context, s string) error {
		fmt.Println(s)
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		panic(err)
	}
	if err := p.Run(context.Background()); err != nil {
		panic(err)
	}
	st := lookup.Stats()
	fmt.Println("errors:", st.Errors, "retries:", st.Retries, "handled:", st.Handled)
	// Output:
	// alice: found
	// bob: found
	// errors: 2 retries: 2 handled: 0
}
