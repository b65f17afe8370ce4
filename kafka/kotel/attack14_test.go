package kotel_test

// Adversarial tests of kotel (issue 14), public API only.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/kafka/kafkatest"
)

// TestAttack14TraceparentOddHeaders: input records whose trace headers are odd, copied by
// the stage into the output record, as TestKafkaOutputContinuesTheTrace's relay does:
//   - offset 0: "Traceparent" (the key as Go's http.Header canonicalises it; kotel reads
//     header keys case-insensitively, so it continues that trace);
//   - offset 1: two "traceparent" headers (a stale second one);
//   - offset 2: a malformed traceparent (no crash: a new trace).
//
// The README: "records written by the producer's sink carry the sink span's context"; the
// package doc: the sink writes it "replacing a traceparent the record already had". So each
// output record must carry exactly one traceparent (any key case), the sink span's: a reader
// taking the first (kotel) or the last (OpenTelemetry Java's lastHeader) must not continue a
// stale context.
func TestAttack14TraceparentOddHeaders(t *testing.T) {
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1), kafkatest.Topic("out", 1))
	inputs := [][]ckafka.Header{
		{{Key: "Traceparent", Value: traceparent(0)}},
		{{Key: "traceparent", Value: traceparent(1)}, {Key: "traceparent", Value: traceparent(2)}},
		{{Key: "traceparent", Value: []byte("00-zz-not-a-trace-context")}},
	}
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": cl.Addr(), "acks": "all", "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	topic := "in"
	reports := make(chan ckafka.Event, len(inputs))
	for i, h := range inputs {
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: 0}, Value: fmt.Appendf(nil, "v%d", i), Headers: h}
		if err := p.Produce(m, reports); err != nil {
			t.Fatal(err)
		}
		if m := (<-reports).(*ckafka.Message); m.TopicPartition.Error != nil {
			t.Fatal(m.TopicPartition.Error)
		}
	}
	p.Close()

	tr, rec := recorder()
	relay(t, cl.Addr(), "traced", "out", len(inputs), true, tr.Option())
	sinkSpan := map[int64]trace.SpanContext{}
	for _, s := range byName(rec)["produce"] {
		sinkSpan[attr(s, "messaging.kafka.offset").AsInt64()] = s.SpanContext()
	}
	if len(sinkSpan) != len(inputs) {
		t.Fatalf("%d produce spans, want %d", len(sinkSpan), len(inputs))
	}
	if sinkSpan[0].TraceID() != traceIDOf(0) || sinkSpan[1].TraceID() != traceIDOf(1) || !sinkSpan[2].IsValid() {
		t.Fatalf("sink spans' traces: %s %s %s, want %s %s and a new one", sinkSpan[0].TraceID(), sinkSpan[1].TraceID(), sinkSpan[2].TraceID(), traceIDOf(0), traceIDOf(1))
	}
	msgs, err := kafkatest.ReadMessages(cl.Addr(), "out", len(inputs), 30*time.Second)
	if err != nil || len(msgs) != len(inputs) {
		t.Fatalf("read %d of %d output records: %v", len(msgs), len(inputs), err)
	}
	for _, m := range msgs {
		var i int64
		if _, err := fmt.Sscanf(string(m.Value), "v%d", &i); err != nil {
			t.Fatal(err)
		}
		var tps []string
		for _, h := range m.Headers {
			if strings.EqualFold(h.Key, "traceparent") {
				tps = append(tps, h.Key+": "+string(h.Value))
			}
		}
		want := sinkSpan[i]
		if len(tps) != 1 {
			t.Errorf("output of offset %d has %d traceparent headers %q, want one naming the sink span %s/%s", i, len(tps), tps, want.TraceID(), want.SpanID())
			continue
		}
		v := strings.SplitN(tps[0], ": ", 2)[1]
		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": v}))
		if sc.SpanID() != want.SpanID() {
			t.Errorf("output of offset %d: %s, want the sink span %s", i, tps[0], want.SpanID())
		}
	}
}
