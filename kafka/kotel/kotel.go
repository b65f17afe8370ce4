// Package kotel traces a sluice pipeline with OpenTelemetry: it reads the W3C trace context
// from each source record's headers, makes every stage call a span, and writes the context of
// the producer sink's call into the output record's headers, so a trace follows a record from
// the service that produced it, through the pipeline, to the services that read its output.
//
// Tracing is opt-in per pipeline: pass Option to pipeline.New. The core packages (stage,
// pipeline, kafka) do not import OpenTelemetry; a pipeline without the option creates no
// spans and writes no trace headers, and its calls pay one nil check each.
//
// What is traced, per source event (a Kafka record):
//
//   - "receive <topic>" (kind Consumer): the event entering the stages, a child of the
//     context extracted from its headers by the propagator (a new trace when they carry
//     none). It starts and ends when the event's first stage call starts: it marks the
//     link between the producer's trace and the pipeline's spans, not a duration. Its
//     context is computed once per event and shared by every span derived from the event.
//   - one span per attempt of every stage call (kind Internal), named after the stage: a
//     call retried twice is three sibling spans, each with its outcome (status Error and the
//     error recorded as an exception event when it failed, a panic included), attribute
//     sluice.attempt giving its number. The span covers the user function only: for an
//     async sink (the Kafka producer's Sink) the hand-over to the producer, not the delivery.
//     The function's context carries the span (trace.SpanFromContext), so user code can
//     start child spans.
//   - a message behind one event (a Map's, a Filter's, a FlatMap's child) is a child of that
//     event's receive span: a FlatMap's children carry their parent event's context, and
//     their spans are in its trace. A Batch output (several events) starts a new trace whose
//     span links the receive spans of all its inputs. The Batch stage itself makes no span
//     (it calls no user function).
//   - the Kafka producer's Sink writes the context of its call's span into the output
//     record's headers (replacing a traceparent the record already had), so the consumer of
//     the output continues the trace from the sink span.
//
// Attributes follow the OpenTelemetry messaging conventions (v1.43): messaging.system=kafka,
// messaging.operation.type (receive, process), messaging.destination.name (the topic),
// messaging.destination.partition.id, messaging.kafka.offset (the event's origin, fixed at
// emission), messaging.batch.message_count for a batch; and sluice.stage.name,
// sluice.stage.kind, sluice.attempt.
//
// Not traced: the error handler (a dead letter keeps the input record's own headers), the
// source's polling and commits.
package kotel

import (
	"context"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/internal/ext"
	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// ScopeName is the instrumentation scope of the spans kotel creates.
const ScopeName = "github.com/sluicehq/sluice/kafka/kotel"

// Attribute keys of sluice's own (the messaging ones are OpenTelemetry's).
const (
	AttrStageName = attribute.Key("sluice.stage.name")
	AttrStageKind = attribute.Key("sluice.stage.kind") // map, filter, flatmap, sink, asyncsink
	AttrAttempt   = attribute.Key("sluice.attempt")    // 1 for the first attempt of a call
)

// Tracing turns a pipeline's stage calls into spans. Create it with New; it is safe for
// concurrent use and may serve several pipelines.
type Tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	opt    pipeline.Option
	inject ext.Injector
}

// Option configures a Tracing.
type Option func(*config)

type config struct {
	tp   trace.TracerProvider
	prop propagation.TextMapPropagator
}

// WithTracerProvider sets where spans go. Default otel.GetTracerProvider() at New (a no-op
// provider unless the program set a global one).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *config) { c.tp = tp } }

// WithPropagator sets how the trace context is read from and written to record headers.
// Default propagation.TraceContext{} (W3C traceparent and tracestate); pass a composite with
// propagation.Baggage{} to carry baggage too.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

// New returns a Tracing with the options applied (nil options are ignored).
func New(opts ...Option) *Tracing {
	c := config{}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.prop == nil {
		c.prop = propagation.TraceContext{}
	}
	t := &Tracing{tracer: c.tp.Tracer(ScopeName), prop: c.prop}
	t.inject = func(ctx context.Context, set func(key, value string)) { t.prop.Inject(ctx, setter(set)) }
	t.opt = ext.WithTracer(t.tracerFor()).(pipeline.Option)
	return t
}

// Option returns the pipeline option that traces the pipeline's stage calls with t: pass it
// to pipeline.New (or append it to a Kafka source's pipeline options).
func (t *Tracing) Option() pipeline.Option { return t.opt }

// tracerFor returns t as the engine's Tracer: a separate type keeps Call out of Tracing's API.
func (t *Tracing) tracerFor() flow.Tracer { return engineTracer{t} }

type engineTracer struct{ t *Tracing }

// eventTrace is what Life.Trace holds: the event's receive span context and its baggage.
type eventTrace struct {
	sc  trace.SpanContext
	bag baggage.Baggage
}

// Call starts the span of one attempt of a stage call on lives' events.
func (e engineTracer) Call(ctx context.Context, name, kind string, attempt int, lives []*flow.Life) (context.Context, func(error)) {
	t := e.t
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, semconv.MessagingSystemKafka, semconv.MessagingOperationTypeProcess,
		AttrStageName.String(name), AttrStageKind.String(kind), AttrAttempt.Int(attempt))
	opts := make([]trace.SpanStartOption, 0, 3)
	opts = append(opts, trace.WithSpanKind(trace.SpanKindInternal))
	if one := single(lives); one != nil {
		et := t.event(one)
		o := one.Origin()
		attrs = append(attrs, semconv.MessagingDestinationName(o.Topic),
			semconv.MessagingDestinationPartitionID(strconv.Itoa(int(o.Partition))),
			semconv.MessagingKafkaOffset(int(o.Offset)))
		ctx = trace.ContextWithSpanContext(ctx, et.sc)
		if et.bag.Len() > 0 {
			ctx = baggage.ContextWithBaggage(ctx, et.bag)
		}
	} else if len(lives) > 1 {
		links := make([]trace.Link, 0, len(lives))
		topic := lives[0].Origin().Topic
		for i, l := range lives {
			if i > 0 && l == lives[i-1] { // a FlatMap's children batched together: one link
				continue
			}
			links = append(links, trace.Link{SpanContext: t.event(l).sc})
			if l.Origin().Topic != topic {
				topic = ""
			}
		}
		attrs = append(attrs, semconv.MessagingBatchMessageCount(len(lives)))
		if topic != "" {
			attrs = append(attrs, semconv.MessagingDestinationName(topic))
		}
		opts = append(opts, trace.WithNewRoot(), trace.WithLinks(links...))
	}
	opts = append(opts, trace.WithAttributes(attrs...))
	ctx, span := t.tracer.Start(ctx, name, opts...)
	return ext.WithInjector(ctx, t.inject), func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// single returns the one event behind lives (a message of one event, or a batch of one
// event's FlatMap children), or nil for several (or none).
func single(lives []*flow.Life) *flow.Life {
	if len(lives) == 0 {
		return nil
	}
	for _, l := range lives[1:] {
		if l != lives[0] {
			return nil
		}
	}
	return lives[0]
}

// event returns l's trace, computing it on the event's first traced call: the context its
// record's headers carry, and the receive span started under it. The engine calls the first
// Call on an event before any message derived from it exists (flow.Life.Trace), so the
// unsynchronised cache is safe.
func (t *Tracing) event(l *flow.Life) *eventTrace {
	if et, ok := l.Trace.(*eventTrace); ok {
		return et
	}
	ev := l.Owner.(*stage.Event)
	parent := t.prop.Extract(context.Background(), headers(ev.Headers))
	o := l.Origin()
	_, span := t.tracer.Start(parent, "receive "+o.Topic,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(semconv.MessagingSystemKafka, semconv.MessagingOperationTypeReceive,
			semconv.MessagingDestinationName(o.Topic),
			semconv.MessagingDestinationPartitionID(strconv.Itoa(int(o.Partition))),
			semconv.MessagingKafkaOffset(int(o.Offset))))
	span.End()
	et := &eventTrace{sc: span.SpanContext(), bag: baggage.FromContext(parent)}
	l.Trace = et
	return et
}

// headers reads a record's headers for a propagator's Extract (the first header of a key;
// keys compare case-insensitively, as the propagators' HTTP carriers do).
type headers []stage.Header

func (h headers) Get(key string) string {
	for _, x := range h {
		if strings.EqualFold(x.Key, key) {
			return string(x.Value)
		}
	}
	return ""
}

func (h headers) Set(string, string) {} // extraction only

func (h headers) Keys() []string {
	keys := make([]string, len(h))
	for i, x := range h {
		keys[i] = x.Key
	}
	return keys
}

// setter writes a propagator's Inject into the producer's output record (kafka's sink).
type setter func(key, value string)

func (s setter) Get(string) string     { return "" }
func (s setter) Set(key, value string) { s(key, value) }
func (s setter) Keys() []string        { return nil }
