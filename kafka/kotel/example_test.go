package kotel_test

import (
	"context"
	"fmt"
	"log"
	"slices"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sluicehq/sluice/kafka/kotel"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Example traces a pipeline: each record's trace context is read from its headers, and each
// stage call is a span. With the Kafka source it is the same option,
// pipeline.New(src, tracing.Option()), and the producer's Sink writes the sink span's context
// into the output record's headers. A service would pass its exporting TracerProvider (or set
// the global one and call kotel.New()); the recorder here prints what was traced.
func Example() {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tracing := kotel.New(kotel.WithTracerProvider(tp))

	src := pipeline.Generate(1, func(i int64, ev *stage.Event) {
		ev.Topic = "orders"
		ev.Headers = append(ev.Headers, stage.Header{Key: "traceparent",
			Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")})
	})
	b := pipeline.New(src, tracing.Option())
	ids := pipeline.Then(b.Source(), stage.Map("decode", func(_ context.Context, ev *stage.Event) (int64, error) {
		return ev.Offset, nil
	}))
	pipeline.To(ids, stage.Sink("store", func(context.Context, int64) error { return nil }))
	p, err := b.Build()
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Run(context.Background()); err != nil {
		log.Fatal(err)
	}

	var lines []string
	for _, s := range rec.Ended() {
		lines = append(lines, fmt.Sprintf("%s: trace %s", s.Name(), s.SpanContext().TraceID()))
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// decode: trace 4bf92f3577b34da6a3ce929d0e0e4736
	// receive orders: trace 4bf92f3577b34da6a3ce929d0e0e4736
	// store: trace 4bf92f3577b34da6a3ce929d0e0e4736
}
