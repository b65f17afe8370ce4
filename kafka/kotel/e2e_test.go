package kotel_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// produceTraced writes n records "v<i>" to topic, each with record i's traceparent and a
// tracestate "sluice=t<i>", and waits for their delivery.
func produceTraced(t *testing.T, addr, topic string, n int) {
	t.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": addr, "acks": "all", "linger.ms": 5, "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	reports := make(chan ckafka.Event, n)
	for i := range n {
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny},
			Value: fmt.Appendf(nil, "v%d", i),
			Headers: []ckafka.Header{
				{Key: "traceparent", Value: traceparent(int64(i))},
				{Key: "tracestate", Value: fmt.Appendf(nil, "sluice=t%d", i)},
			}}
		if err := p.Produce(m, reports); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if m := (<-reports).(*ckafka.Message); m.TopicPartition.Error != nil {
			t.Fatal(m.TopicPartition.Error)
		}
	}
}

// relay runs source(group on "in") → Map → the producer's Sink("produce") to out until n
// events completed. keepHeaders copies the input record's headers into the output record.
func relay(t *testing.T, addr, group, out string, n int, keepHeaders bool, opts ...pipeline.Option) {
	t.Helper()
	src, err := kafka.NewSource(kafka.Config{Brokers: addr, GroupID: group, Topics: []string{"in"},
		Overrides: kafkatest.FastGroup(), Logger: kafkatest.Logger(), Budget: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: out})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	b := pipeline.New(src, append(opts, pipeline.WithLogger(kafkatest.Logger()))...)
	recs := pipeline.Then(b.Source(), stage.Map("to-record", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		r := kafka.Record{Value: append([]byte(nil), ev.Value...)}
		if keepHeaders {
			for _, h := range ev.Headers {
				r.Headers = append(r.Headers, stage.Header{Key: h.Key, Value: append([]byte(nil), h.Value...)})
			}
		}
		return r, nil
	}))
	pipeline.To(recs, prod.Sink("produce"))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	kafkatest.WaitFor(t, 60*time.Second, "every event completed", func() bool { return p.Stats().Completed >= uint64(n) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// headerValues returns every value of key among m's headers.
func headerValues(m *ckafka.Message, key string) []string {
	var vs []string
	for _, h := range m.Headers {
		if h.Key == key {
			vs = append(vs, string(h.Value))
		}
	}
	return vs
}

// TestKafkaOutputContinuesTheTrace: records consumed with a traceparent come out of the
// producer sink with a traceparent of the same trace whose parent is the sink call's span (the
// input's traceparent, copied by the stage, replaced), and with the input's tracestate. A
// pipeline without the option, in the same process, writes no trace header and makes no span.
func TestKafkaOutputContinuesTheTrace(t *testing.T) {
	const n = 6
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1), kafkatest.Topic("out", 1), kafkatest.Topic("plain-out", 1))
	produceTraced(t, cl.Addr(), "in", n)
	tr, rec := recorder()
	relay(t, cl.Addr(), "traced", "out", n, true, tr.Option())

	sinkSpan := map[int64]trace.SpanContext{} // by input offset
	for _, s := range byName(rec)["produce"] {
		sinkSpan[attr(s, "messaging.kafka.offset").AsInt64()] = s.SpanContext()
		if attr(s, "messaging.destination.name").AsString() != "in" {
			t.Fatalf("produce span names topic %q, want the input's", attr(s, "messaging.destination.name").AsString())
		}
	}
	if len(sinkSpan) != n {
		t.Fatalf("%d produce spans, want %d", len(sinkSpan), n)
	}
	msgs, err := kafkatest.ReadMessages(cl.Addr(), "out", n, 30*time.Second)
	if err != nil || len(msgs) != n {
		t.Fatalf("read %d of %d output records: %v", len(msgs), n, err)
	}
	for _, m := range msgs {
		var i int64
		if _, err := fmt.Sscanf(string(m.Value), "v%d", &i); err != nil {
			t.Fatal(err)
		}
		tp := headerValues(m, "traceparent")
		if len(tp) != 1 {
			t.Fatalf("record %s has traceparent headers %q, want exactly one (the input's replaced)", m.Value, tp)
		}
		carrier := propagation.MapCarrier{"traceparent": tp[0], "tracestate": strings.Join(headerValues(m, "tracestate"), ",")}
		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
		if sc.TraceID() != traceIDOf(i) || sc.SpanID() != sinkSpan[i].SpanID() {
			t.Fatalf("record %s: traceparent %s, want trace %s and the sink span %s", m.Value, tp[0], traceIDOf(i), sinkSpan[i].SpanID())
		}
		if got := sc.TraceState().String(); got != fmt.Sprintf("sluice=t%d", i) {
			t.Fatalf("record %s: tracestate %q, want the input's", m.Value, got)
		}
	}

	spans := len(rec.Ended())
	relay(t, cl.Addr(), "plain", "plain-out", n, false)
	plain, err := kafkatest.ReadMessages(cl.Addr(), "plain-out", n, 30*time.Second)
	if err != nil || len(plain) != n {
		t.Fatalf("read %d of %d untraced output records: %v", len(plain), n, err)
	}
	for _, m := range plain {
		if len(m.Headers) != 0 {
			t.Fatalf("untraced pipeline wrote headers %v", m.Headers)
		}
	}
	if got := len(rec.Ended()); got != spans {
		t.Fatalf("untraced pipeline made %d spans", got-spans)
	}
}
