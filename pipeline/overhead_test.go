package pipeline_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// BenchmarkOverhead compares the framework with a hand-written chain of goroutines and
// channels of capacity 64: a feeder, three pass-through steps, and a consumer. One op is one
// message through the whole chain.
func BenchmarkOverhead(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		payload := make([]byte, 64)
		type item struct {
			v []byte
			n int64
		}
		src := make(chan item, 64)
		chans := [3]chan item{make(chan item, 64), make(chan item, 64), make(chan item, 64)}
		step := func(in <-chan item, out chan<- item) {
			for it := range in {
				out <- it
			}
			close(out)
		}
		go step(src, chans[0])
		go step(chans[0], chans[1])
		go step(chans[1], chans[2])
		b.ReportAllocs()
		b.ResetTimer()
		go func() {
			for i := 0; i < b.N; i++ {
				src <- item{v: payload, n: int64(i)}
			}
			close(src)
		}()
		var sum int64
		for it := range chans[2] {
			sum += it.n
		}
		_ = sum
	})
	// sluice: concurrency 1, the acceptance shape; sluice-c8: every stage at concurrency 8, ordered.
	b.Run("sluice", func(b *testing.B) { benchSluice(b, 1) })
	b.Run("sluice-c8", func(b *testing.B) { benchSluice(b, 8) })
	// sluice-c8-cap4: the same with WithMaxCalls(4), so every call hands over to the call pool.
	b.Run("sluice-c8-cap4", func(b *testing.B) { benchSluice(b, 8, pipeline.WithMaxCalls(4)) })
}

func benchSluice(b *testing.B, conc int, opts ...pipeline.Option) {
	payload := make([]byte, 64)
	src := pipeline.Generate(int64(b.N), func(i int64, ev *stage.Event) { ev.Value = payload })
	pass := func(_ context.Context, ev *stage.Event) (*stage.Event, error) { return ev, nil }
	bld := pipeline.New(src, append([]pipeline.Option{pipeline.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...)
	s := pipeline.Then(bld.Source(), stage.Map("a", pass, stage.WithConcurrency(conc)))
	s = pipeline.Then(s, stage.Map("b", pass, stage.WithConcurrency(conc)))
	s = pipeline.Then(s, stage.Map("c", pass, stage.WithConcurrency(conc)))
	var n atomic.Int64
	pipeline.To(s, stage.Sink("sink", func(_ context.Context, ev *stage.Event) error { n.Add(1); return nil }))
	p, err := bld.Build()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if err := p.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if ok, _ := src.Completed(); ok != uint64(b.N) || n.Load() != int64(b.N) {
		b.Fatalf("completed %d, sunk %d, want %d", ok, n.Load(), b.N)
	}
}
