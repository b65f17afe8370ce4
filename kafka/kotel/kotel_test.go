package kotel_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/kafka/kotel"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// recorder returns a Tracing that records every span it ends, sampled always.
func recorder() (*kotel.Tracing, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	return kotel.New(kotel.WithTracerProvider(tp)), rec
}

// traceIDOf returns the trace id the test gives record i (never zero).
func traceIDOf(i int64) trace.TraceID {
	var id trace.TraceID
	id[0], id[15] = 0xAB, byte(i+1)
	return id
}

// spanIDOf returns the producer span id the test gives record i.
func spanIDOf(i int64) trace.SpanID {
	var id trace.SpanID
	id[0], id[7] = 0xCD, byte(i+1)
	return id
}

// traceparent is the W3C header of record i: a sampled remote parent.
func traceparent(i int64) []byte {
	return fmt.Appendf(nil, "00-%s-%s-01", traceIDOf(i), spanIDOf(i))
}

// source emits n events of topic "in", partition 3, each with its traceparent header.
func source(n int64) *pipeline.MemSource {
	return pipeline.Generate(n, func(i int64, ev *stage.Event) {
		ev.Topic, ev.Partition = "in", 3
		ev.Value = fmt.Appendf(ev.Value[:0], "v%d", i)
		ev.Headers = append(ev.Headers, stage.Header{Key: "traceparent", Value: traceparent(i)})
	})
}

func run(t *testing.T, b *pipeline.Builder) {
	t.Helper()
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// byName groups the ended spans by name.
func byName(rec *tracetest.SpanRecorder) map[string][]sdktrace.ReadOnlySpan {
	m := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		m[s.Name()] = append(m[s.Name()], s)
	}
	return m
}

// receives maps each event's offset to its receive span.
func receives(t *testing.T, spans map[string][]sdktrace.ReadOnlySpan, n int) map[int64]sdktrace.ReadOnlySpan {
	t.Helper()
	got := map[int64]sdktrace.ReadOnlySpan{}
	for _, s := range spans["receive in"] {
		off := attr(s, "messaging.kafka.offset").AsInt64()
		if _, dup := got[off]; dup {
			t.Fatalf("two receive spans for offset %d (the event's context must be computed once)", off)
		}
		got[off] = s
	}
	if len(got) != n {
		t.Fatalf("receive spans for %d events, want %d", len(got), n)
	}
	return got
}

// TestSpansContinueTheRecordsTrace: the receive span of each event is a child of the remote
// context its traceparent header carries, and every stage call's span is a child of that
// receive span, with the record's origin and the stage as attributes.
func TestSpansContinueTheRecordsTrace(t *testing.T) {
	tr, rec := recorder()
	const n = 20
	b := pipeline.New(source(n), tr.Option())
	vals := pipeline.Then(b.Source(), stage.Map("decode", func(_ context.Context, ev *stage.Event) (string, error) {
		return string(ev.Value), nil
	}, stage.WithConcurrency(4)))
	pipeline.To(vals, stage.Sink("store", func(ctx context.Context, v string) error {
		if !trace.SpanFromContext(ctx).SpanContext().IsValid() {
			return errors.New("the call's context carries no span")
		}
		return nil
	}))
	run(t, b)

	spans := byName(rec)
	recv := receives(t, spans, n)
	for off, s := range recv {
		if s.Parent().TraceID() != traceIDOf(off) || s.Parent().SpanID() != spanIDOf(off) || !s.Parent().IsRemote() {
			t.Fatalf("receive span of %d: parent %v, want the header's remote context %s/%s", off, s.Parent(), traceIDOf(off), spanIDOf(off))
		}
		if s.SpanKind() != trace.SpanKindConsumer || attr(s, "messaging.destination.partition.id").AsString() != "3" {
			t.Fatalf("receive span of %d: kind %v, partition %q", off, s.SpanKind(), attr(s, "messaging.destination.partition.id").AsString())
		}
	}
	for _, name := range []string{"decode", "store"} {
		if len(spans[name]) != n {
			t.Fatalf("%d %q spans, want %d", len(spans[name]), name, n)
		}
		for _, s := range spans[name] {
			off := attr(s, "messaging.kafka.offset").AsInt64()
			r := recv[off]
			if s.Parent().SpanID() != r.SpanContext().SpanID() || s.SpanContext().TraceID() != traceIDOf(off) {
				t.Fatalf("%s span of offset %d: parent %s trace %s, want receive span %s in trace %s",
					name, off, s.Parent().SpanID(), s.SpanContext().TraceID(), r.SpanContext().SpanID(), traceIDOf(off))
			}
			if attr(s, "messaging.system").AsString() != "kafka" || attr(s, "messaging.destination.name").AsString() != "in" ||
				attr(s, "messaging.destination.partition.id").AsString() != "3" || attr(s, kotel.AttrStageName).AsString() != name ||
				attr(s, kotel.AttrAttempt).AsInt64() != 1 || s.Status().Code == codes.Error {
				t.Fatalf("%s span of offset %d: attributes %v, status %v", name, off, s.Attributes(), s.Status())
			}
		}
	}
	if k := attr(spans["decode"][0], kotel.AttrStageKind).AsString(); k != "map" {
		t.Fatalf("decode's kind %q, want map", k)
	}
}

// TestEachAttemptIsASpan: a call that fails, is retried and then succeeds is two spans, the
// first with status Error and the error recorded; a panic is an error span too.
func TestEachAttemptIsASpan(t *testing.T) {
	tr, rec := recorder()
	var calls atomic.Int64
	b := pipeline.New(source(1), tr.Option(), pipeline.WithErrorHandler(func(context.Context, *stage.Failure) error { return nil }))
	vals := pipeline.Then(b.Source(), stage.Map("flaky", func(_ context.Context, ev *stage.Event) (string, error) {
		if calls.Add(1) == 1 {
			return "", errors.New("transient")
		}
		return string(ev.Value), nil
	}, stage.WithRetry(stage.Retry{Retries: 2, Backoff: time.Millisecond})))
	pipeline.To(vals, stage.Sink("boom", func(context.Context, string) error { panic("bad sink") }))
	run(t, b)

	spans := byName(rec)
	flaky := spans["flaky"]
	if len(flaky) != 2 {
		t.Fatalf("%d flaky spans, want 2 (one per attempt)", len(flaky))
	}
	first, second := flaky[0], flaky[1]
	if attr(first, kotel.AttrAttempt).AsInt64() != 1 || first.Status().Code != codes.Error || first.Status().Description != "transient" ||
		len(first.Events()) == 0 || first.Events()[0].Name != "exception" {
		t.Fatalf("first attempt: attempt %v, status %v, events %v", attr(first, kotel.AttrAttempt), first.Status(), first.Events())
	}
	if attr(second, kotel.AttrAttempt).AsInt64() != 2 || second.Status().Code == codes.Error || second.Parent().SpanID() != first.Parent().SpanID() {
		t.Fatalf("second attempt: attempt %v, status %v, parent %s (first's %s)", attr(second, kotel.AttrAttempt), second.Status(), second.Parent().SpanID(), first.Parent().SpanID())
	}
	boom := spans["boom"]
	if len(boom) != 1 || boom[0].Status().Code != codes.Error || !strings.Contains(boom[0].Status().Description, "bad sink") {
		t.Fatalf("panicking sink: spans %d, status %v", len(boom), boom)
	}
}

// TestBatchSpanLinksItsInputs: the span of a call on a Batch output starts a new trace and
// links the receive span of every event in the batch.
func TestBatchSpanLinksItsInputs(t *testing.T) {
	tr, rec := recorder()
	const n, size = 12, 4
	b := pipeline.New(source(n), tr.Option())
	vals := pipeline.Then(b.Source(), stage.Map("decode", func(_ context.Context, ev *stage.Event) (string, error) {
		return string(ev.Value), nil
	}))
	batches := pipeline.Then(vals, stage.Batch("group", stage.BatchConfig[string]{MaxCount: size}))
	pipeline.To(batches, stage.Sink("bulk", func(context.Context, []string) error { return nil }))
	run(t, b)

	spans := byName(rec)
	recv := receives(t, spans, n)
	if len(spans["group"]) != 0 {
		t.Fatalf("the Batch stage made %d spans, want none (it calls no function)", len(spans["group"]))
	}
	linked := map[trace.SpanID]bool{}
	for _, s := range spans["bulk"] {
		if s.Parent().IsValid() {
			t.Fatalf("batch span has parent %v, want a new root", s.Parent())
		}
		if len(s.Links()) != size || attr(s, "messaging.batch.message_count").AsInt64() != size {
			t.Fatalf("batch span: %d links, count %v, want %d", len(s.Links()), attr(s, "messaging.batch.message_count"), size)
		}
		for _, l := range s.Links() {
			if s.SpanContext().TraceID() == l.SpanContext.TraceID() {
				t.Fatalf("batch span is in an input's trace %s", l.SpanContext.TraceID())
			}
			linked[l.SpanContext.SpanID()] = true
		}
	}
	for off, r := range recv {
		if !linked[r.SpanContext().SpanID()] {
			t.Fatalf("the receive span of offset %d is linked by no batch span", off)
		}
	}
}

// TestFlatMapChildrenCarryTheirParentsContext: the spans of a FlatMap's children downstream are
// children of their parent event's receive span, in the parent record's trace.
func TestFlatMapChildrenCarryTheirParentsContext(t *testing.T) {
	tr, rec := recorder()
	const n, fan = 5, 3
	b := pipeline.New(source(n), tr.Option())
	kids := pipeline.Then(b.Source(), stage.FlatMap("split", func(_ context.Context, ev *stage.Event) ([]string, error) {
		out := make([]string, fan)
		for i := range out {
			out[i] = fmt.Sprintf("%s.%d", ev.Value, i)
		}
		return out, nil
	}))
	pipeline.To(kids, stage.Sink("each", func(context.Context, string) error { return nil }, stage.WithConcurrency(4)))
	run(t, b)

	spans := byName(rec)
	recv := receives(t, spans, n)
	per := map[int64]int{}
	for _, s := range spans["each"] {
		off := attr(s, "messaging.kafka.offset").AsInt64()
		if s.SpanContext().TraceID() != traceIDOf(off) || s.Parent().SpanID() != recv[off].SpanContext().SpanID() {
			t.Fatalf("child span of offset %d: trace %s parent %s, want trace %s parent %s",
				off, s.SpanContext().TraceID(), s.Parent().SpanID(), traceIDOf(off), recv[off].SpanContext().SpanID())
		}
		per[off]++
	}
	for off := range int64(n) {
		if per[off] != fan {
			t.Fatalf("offset %d: %d child spans, want %d", off, per[off], fan)
		}
	}
}

// TestNoOptionNoSpans: a pipeline without the option creates no spans, even in a process where
// another pipeline traces, and its calls' contexts carry no span.
func TestNoOptionNoSpans(t *testing.T) {
	tr, rec := recorder()
	b := pipeline.New(source(3), tr.Option())
	pipeline.To(b.Source(), stage.Sink("traced", func(context.Context, *stage.Event) error { return nil }))
	run(t, b)
	traced := len(rec.Ended())
	if traced == 0 {
		t.Fatal("the traced pipeline made no spans")
	}

	var withSpan atomic.Int64
	b = pipeline.New(source(3))
	pipeline.To(b.Source(), stage.Sink("plain", func(ctx context.Context, _ *stage.Event) error {
		if trace.SpanFromContext(ctx).SpanContext().IsValid() {
			withSpan.Add(1)
		}
		return nil
	}))
	run(t, b)
	if got := len(rec.Ended()); got != traced || withSpan.Load() != 0 {
		t.Fatalf("untraced pipeline: %d new spans, %d calls with a span; want none", got-traced, withSpan.Load())
	}
}

// TestCoreDoesNotImportOpenTelemetry: stage, pipeline, pool and kafka build without otel.
func TestCoreDoesNotImportOpenTelemetry(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps",
		"github.com/sluicehq/sluice/stage", "github.com/sluicehq/sluice/pipeline",
		"github.com/sluicehq/sluice/pool", "github.com/sluicehq/sluice/kafka").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "github.com/sluicehq/sluice/internal/flow") {
		t.Fatalf("go list -deps lists no engine package: %s", out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "opentelemetry") {
			t.Fatalf("a core package depends on %s", dep)
		}
	}
}
