package kafka_test

import (
	"context"
	"errors"
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
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"}) // the source's brokers, budget and logger
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background()) // the caller's: the sink only flushes
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

// TestSinkLeavesTheProducerToItsOwner: the producer belongs to whoever created it. At the end
// of Run its sink has flushed (every record delivered, nothing outstanding) but not closed it:
// a dead letter produced through it after Run is written; only the owner's Close stops it.
func TestSinkLeavesTheProducerToItsOwner(t *testing.T) {
	const n, parts = 200, 2
	cl := startCluster(t, kafkatest.Topic("in", parts), kafkatest.Topic("out", parts), kafkatest.Topic("dlq", 1))
	want := produceN(t, cl.Addr(), "in", "v", n, 20)
	src := newSource(t, sourceConfig(cl.Addr(), "g-owner", "in"))
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	r := start(t, src, pipeToProducer(prod, 2))
	kafkatest.WaitFor(t, 60*time.Second, "every record", func() bool { return r.p.Stats().Completed >= n })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if st := prod.Stats(); st.Outstanding != 0 {
		t.Fatalf("after Run: %d record(s) outstanding, want the sink flushed", st.Outstanding)
	}
	requireSet(t, want, readAll(t, cl.Addr(), "out", n, 30*time.Second))

	deadLetter := func() error {
		ev := stage.GetEvent()
		defer ev.Release()
		ev.Value = []byte("after-run")
		return prod.DeadLetter("dlq")(context.Background(), &stage.Failure{Stage: "late", Err: errors.New("late failure"), Events: []*stage.Event{ev}})
	}
	if err := deadLetter(); err != nil {
		t.Fatalf("dead letter after Run: %v (the sink closed a producer it does not own?)", err)
	}
	if got := readAll(t, cl.Addr(), "dlq", 1, 30*time.Second); got["after-run"] != 1 {
		t.Fatalf("dead-letter topic holds %v, want the record produced after Run", got)
	}
	if err := prod.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := deadLetter(); !errors.Is(err, kafka.ErrProducerClosed) {
		t.Fatalf("dead letter after Close: %v, want ErrProducerClosed", err)
	}
}
