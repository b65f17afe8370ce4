package kafka_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestProducerGoHeapIsSmall: a producer takes almost nothing of the Go heap, idle or after
// its sink delivered records. confluent-kafka-go's defaults allocate its Events() and
// ProduceChannel() buffers (a million slots each, 23 MiB) on the Go heap at NewProducer:
// outside the budget's producer share (librdkafka's queue), and counted by the GC's heap goal.
// Measured as the live heap after GC, with the broker in its own process.
func TestProducerGoHeapIsSmall(t *testing.T) {
	const topic, records = "producer-heap", 2000
	addr := brokerProcess(t, topic, 4)
	const bound = 2 << 20

	base := liveHeap()
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: addr, Topic: topic, Logger: kafkatest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	if idle := liveHeap() - base; idle > bound {
		t.Fatalf("a new producer holds %.1f MiB of live Go heap, want at most %d MiB", float64(idle)/(1<<20), bound>>20)
	}

	src := pipeline.Generate(records, func(i int64, ev *stage.Event) { ev.Value = append(ev.Value[:0], byte(i), byte(i>>8)) })
	b := pipeline.New(src, pipeline.WithLogger(kafkatest.Logger()))
	recs := pipeline.Then(b.Source(), stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		return kafka.Record{Value: ev.Value}, nil
	}))
	pipeline.To(recs, prod.Sink("produce"))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Completed != records {
		t.Fatalf("completed %d of %d records", st.Completed, records)
	}
	p = nil
	if used := liveHeap() - base; used > bound {
		t.Fatalf("after delivering %d records the producer holds %.1f MiB of live Go heap, want at most %d MiB", records, float64(used)/(1<<20), bound>>20)
	}
	runtime.KeepAlive(prod)
}
