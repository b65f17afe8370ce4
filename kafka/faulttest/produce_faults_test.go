package faulttest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestFaultProduceErrors: produce requests to the output topic fail with retriable errors
// (NOT_LEADER_FOR_PARTITION, then REQUEST_TIMED_OUT) for a while; the idempotent producer
// retries, every source event completes only after its record is delivered, and the output
// holds every input value.
func TestFaultProduceErrors(t *testing.T) {
	const n, parts = 1000, 2
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts), kafkatest.Topic("out", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	cl.Kfake().Fault(
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "out", Err: kerr.NotLeaderForPartition, Count: 5},
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "out", Err: kerr.RequestTimedOut, Count: 5},
	)
	src, err := kafka.NewSource(kafka.Config{Brokers: cl.Addr(), GroupID: "g", Topics: []string{"in"}, Overrides: fastGroup,
		CommitInterval: 100 * time.Millisecond, Logger: logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Topic: "out", Logger: logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	b := pipeline.New(src, append(src.PipelineOptions(), pipeline.WithLogger(logger()))...)
	recs := pipeline.Then(b.Source(), stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		return kafka.Record{Key: append([]byte(nil), ev.Key...), Value: append([]byte(nil), ev.Value...)}, nil
	}))
	pipeline.To(recs, prod.Sink("produce", stage.Concurrency(4)))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	until(t, 60*time.Second, "all delivered and completed", func() bool { return p.Stats().Completed == n })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ps := prod.Stats(); ps.DeliveryErrors != 0 {
		t.Fatalf("delivery errors %d: librdkafka should have retried the retriable faults", ps.DeliveryErrors)
	}
	out, err := kafkatest.ReadMessages(cl.Addr(), "out", n, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := newSeen()
	for _, m := range out {
		s.add(string(m.Value))
	}
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
}
