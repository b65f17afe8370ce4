package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestConsumeProcessProduceSetEquality: consume → map → produce; the output topic holds
// exactly the input set, and the group's committed offsets reach the end of every partition.
func TestConsumeProcessProduceSetEquality(t *testing.T) {
	const n, parts = 3000, 4
	cl := startCluster(t, kafkatest.Topic("in", parts), kafkatest.Topic("out", parts))
	want := produceN(t, cl.Addr(), "in", "v", n, 50)

	src, err := kafka.NewSource(sourceConfig(cl.Addr(), "g1", "in"))
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Topic: "out", Logger: kafkatest.Logger(), Budget: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	b := pipeline.New(src, append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()))...)
	recs := pipeline.Then(b.Source(), stage.Map("to-record", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		return kafka.Record{Key: append([]byte(nil), ev.Key...), Value: append([]byte(nil), ev.Value...)}, nil
	}, stage.WithConcurrency(4)))
	pipeline.To(recs, prod.Sink("produce", stage.WithConcurrency(4)))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for p.Stats().Completed < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling a counter: no signal exists across the pipeline
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := readAll(t, cl.Addr(), "out", n, 30*time.Second)
	for v := range want {
		if got[v] == 0 {
			t.Fatalf("missing %q in output (%d of %d seen)", v, len(got), n)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("output has %d distinct values, want %d", len(got), len(want))
	}
	var total int64
	for _, off := range committed(t, cl.Addr(), "g1", "in", parts) {
		total += off
	}
	if total != n {
		t.Fatalf("committed offsets sum to %d, want %d", total, n)
	}
}
