package kafka_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

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

// TestProducerQueueFollowsTheBroker: against an output that takes (almost) nothing, a producer
// sink holds no more records than librdkafka can keep at one broker (five requests of at most
// message.max.bytes awaiting their response, one being filled), not the budget's whole
// producer share: each waiting record keeps its input event in flight (Go heap) beside its
// copy in librdkafka's queue, for as long as the broker makes it wait. Measured as the live Go
// heap after GC of the events in flight (40 KiB values, one allocation each) once the sink met
// a full queue, with the broker in its own process (kfakebroker --produce-rate). Before the cap
// the 64 MiB budget's 16 MiB share stayed full: 21 MiB of events with the edges.
func TestProducerQueueFollowsTheBroker(t *testing.T) {
	const topic, size = "producer-queue", 40 << 10
	bp, err := kafkatest.StartProcess(context.Background(), "--topic", topic+":4", "--produce-rate", topic+"=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bp.Stop(); err != nil {
			t.Error(err)
		}
	})

	base := liveHeap()
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: bp.Addr(), Topic: topic, FlushTimeout: time.Second, Logger: kafkatest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	src := pipeline.Generate(2000, func(_ int64, ev *stage.Event) { ev.Value = make([]byte, size) })
	b := pipeline.New(src, pipeline.WithLogger(kafkatest.Logger()), pipeline.WithBudget(32<<20),
		pipeline.WithDrainTimeout(500*time.Millisecond), pipeline.WithCloseTimeout(500*time.Millisecond))
	recs := pipeline.Then(b.Source(), stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		return kafka.Record{Value: ev.Value}, nil
	}))
	pipeline.To(recs, prod.Sink("produce"))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	// The sink waited for room a few times (50 ms each): the queue is full, the edges too.
	kafkatest.WaitFor(t, 30*time.Second, "the producer's queue to fill", func() bool { return prod.Stats().QueueFull >= 5 })
	held := liveHeap() - base
	st := p.Stats()
	cancel()
	<-ran // an error: the records still queued were not delivered

	// The cap (6 × message.max.bytes: 6.4 MiB), the two edges of 64 and one record in each
	// stage, and 2 MiB for the producer and the pipeline themselves.
	const edges = (2*64 + 2) * size
	bound := int64(6*(1<<20+64<<10) + edges + 2<<20)
	t.Logf("in flight %d events (%.1f MiB by the budget), live heap %.1f MiB, outstanding %d", st.InFlightEvents,
		float64(st.InFlightBytes)/(1<<20), float64(held)/(1<<20), prod.Stats().Outstanding)
	if held > bound {
		t.Fatalf("a producer sink blocked by its broker holds %.1f MiB of events, want at most %.1f MiB: %s", float64(held)/(1<<20), float64(bound)/(1<<20),
			fmt.Sprintf("%d events in flight", st.InFlightEvents))
	}
}
