package faulttest

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestFaultOversizedMessage: a record larger than the whole in-flight budget cannot be admitted;
// it goes to the error handler with ErrTooLarge (here a dead-letter topic), the partition
// advances, nothing deadlocks.
func TestFaultOversizedMessage(t *testing.T) {
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1), kafkatest.Topic("dlq", 1))
	want := produce(t, cl.Addr(), "in", "a", 50)
	big := produceBig(t, cl.Addr(), "in", 900<<10)
	for v := range produce(t, cl.Addr(), "in", "b", 50) {
		want[v] = true
	}
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	var tooLarge atomic.Int32
	dlq := prod.DeadLetter("dlq")
	s := newSeen()
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in",
		// In flight gets Budget/2 = 512 KiB: the 900 KiB record cannot be admitted.
		cfg: func(c *kafka.Config) { c.Budget, c.MaxMessageBytes = 1<<20, 256<<10 },
		handler: func(ctx context.Context, f *stage.Failure) error {
			if errors.Is(f.Err, pipeline.ErrTooLarge) {
				tooLarge.Add(1)
			}
			return dlq(ctx, f)
		}})
	kafkatest.WaitFor(t, 30*time.Second, "the records around the big one", func() bool { return s.distinct() == 100 })
	if tooLarge.Load() != 1 {
		t.Fatalf("handler saw %d ErrTooLarge, want 1", tooLarge.Load())
	}
	s.add(string(big)) // it is in the DLQ: the commit must pass it
	want[string(big)] = true
	checkAll(t, s, want, cl.Addr(), "g", "in", 1)
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	if n := prod.Stats().DeadLetters; n != 1 {
		t.Fatalf("dead letters %d, want 1", n)
	}
}

// produceBig writes one record of size bytes to topic and returns its value.
func produceBig(t testing.TB, addr, topic string, size int) []byte {
	t.Helper()
	p, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: addr, Topic: topic, Logger: kafkatest.Logger(), MaxMessageBytes: 1 << 20, Budget: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	v := bytes.Repeat([]byte("x"), size)
	ev := stage.GetEvent()
	defer ev.Release()
	ev.Value = v
	// DeadLetter is the producer's synchronous produce; the extra headers do not matter here.
	if err := p.DeadLetter(topic)(context.Background(), &stage.Failure{Stage: "big", Err: errors.New("seed"), Events: []*stage.Event{ev}}); err != nil {
		t.Fatal(err)
	}
	return v
}
