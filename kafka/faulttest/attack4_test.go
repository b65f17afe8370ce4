package faulttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Fourth round of adversarial probes of issue 12, written from the README as a user would.

// userBug is user code stuck in a call that ignores its context: it blocks until the test
// releases it (at its end, so that no goroutine is left).
type userBug struct {
	entered chan struct{} // closed when the first call is stuck
	once    sync.Once
	release chan struct{}
	calls   atomic.Int64
}

func newUserBug() *userBug {
	return &userBug{entered: make(chan struct{}), release: make(chan struct{})}
}

// block is the stuck call: the first one blocks (ignoring ctx) until release.
func (u *userBug) block() {
	if u.calls.Add(1) != 1 {
		return
	}
	u.once.Do(func() { close(u.entered) })
	<-u.release
}

// TestFaultAttack4ShutdownBoundUserCodeIgnoresContext: README "Graceful shutdown that never
// hangs": "Run returns within drain + 2 × close timeout, and no goroutine outlives it, with one
// exception that librdkafka imposes". Each case is user code that ignores its context (a bug,
// but an ordinary one): Run's context is cancelled while it is stuck, and Run must return
// within drain + 2 × close timeout (plus slack), or the README must say that it does not.
func TestFaultAttack4ShutdownBoundUserCodeIgnoresContext(t *testing.T) {
	const drain, closeT = 500 * time.Millisecond, 500 * time.Millisecond
	errPoison := errors.New("poison")
	cases := []struct {
		name    string
		handler bool // the error handler is the stuck call
		wire    func(b *pipeline.Builder, u *userBug)
	}{
		{"sink call ignores ctx", false, func(b *pipeline.Builder, u *userBug) {
			pipeline.To(b.Source(), stage.Sink("sink", func(context.Context, *stage.Event) error { u.block(); return nil }))
		}},
		{"Map Timeout shorter than a call that ignores ctx", false, func(b *pipeline.Builder, u *userBug) {
			out := pipeline.Then(b.Source(), stage.Map("slow", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
				u.block()
				return ev, nil
			}, stage.Timeout(100*time.Millisecond)))
			pipeline.To(out, stage.Sink("sink", func(context.Context, *stage.Event) error { return nil }))
		}},
		{"error handler on a worker ignores ctx", true, func(b *pipeline.Builder, u *userBug) {
			pipeline.To(b.Source(), stage.Sink("sink", func(context.Context, *stage.Event) error { return errPoison }))
		}},
		{"error handler after a Nack ignores ctx", true, func(b *pipeline.Builder, u *userBug) {
			pipeline.To(b.Source(), stage.AsyncSink("async", func(_ context.Context, _ *stage.Event, d stage.Done) error {
				d.Nack(errPoison)
				return nil
			}, nil))
		}},
		{"async sink never ends Done, no close hook", false, func(b *pipeline.Builder, u *userBug) {
			pipeline.To(b.Source(), stage.AsyncSink("async", func(context.Context, *stage.Event, stage.Done) error {
				u.once.Do(func() { close(u.entered) })
				return nil
			}, nil))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
			cl := kafkatest.StartT(t, kafkatest.Topic("in", 1))
			produce(t, cl.Addr(), "in", "v", 50)
			src := attackSource(t, cl.Addr(), nil)
			u := newUserBug()
			opts := append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()),
				pipeline.WithDrainTimeout(drain), pipeline.WithCloseTimeout(closeT))
			if c.handler {
				opts = append(opts, pipeline.WithErrorHandler(func(context.Context, *stage.Failure) error { u.block(); return nil }))
			}
			b := pipeline.New(src, opts...)
			c.wire(b, u)
			p, err := b.Build()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			released := false
			defer func() {
				if !released {
					close(u.release)
				}
				cancel()
			}()
			select {
			case <-u.entered:
			case <-time.After(30 * time.Second):
				t.Fatal("the user code was never called")
			}
			cancel()
			began := time.Now()
			bound := drain + 2*closeT
			select {
			case err := <-done:
				t.Logf("Run returned after %v (bound %v): %v", time.Since(began).Round(time.Millisecond), bound, err)
				if took := time.Since(began); took > bound+time.Second {
					t.Errorf("Run took %v, want within drain + 2 × close (%v)", took, bound)
				}
			case <-time.After(bound + 3*time.Second):
				t.Errorf("Run has not returned %v after cancel (drain + 2 × close = %v): it waits for user code that ignores its context, an exception the README does not state", time.Since(began).Round(time.Millisecond), bound)
				close(u.release)
				released = true
				select {
				case err := <-done:
					t.Logf("Run returned once the user code was released: %v", err)
				case <-time.After(30 * time.Second):
					t.Fatal("Run did not return even after the user code was released")
				}
			}
		})
	}
}

// order is what the README's minimal pipeline decodes.
type order struct {
	ID    int    `json:"id"`
	Item  string `json:"item"`
	key   []byte
	Price int `json:"price,omitempty"`
}

// TestFaultAttack4ReadmeMinimalPipeline runs the README's "A minimal pipeline" as written (only
// the broker address differs) with real decode and enrich functions against the embedded
// broker: 300 orders, three of them poison (not JSON). Every order ends in orders-out, every
// poison record in orders-dlq, nothing twice in the output, the commits reach the end of
// every partition, Run returns nil on cancel and no goroutine is left.
func TestFaultAttack4ReadmeMinimalPipeline(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const n, parts = 300, 4
	cl := kafkatest.StartT(t, kafkatest.Topic("orders", parts), kafkatest.Topic("orders-out", parts), kafkatest.Topic("orders-dlq", 1))
	addr := cl.Addr()
	poison := map[int]bool{7: true, 150: true, 299: true}
	w, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": addr, "acks": "all", "log_level": 3, "go.delivery.reports": false})
	if err != nil {
		t.Fatal(err)
	}
	topic := "orders"
	for i := range n {
		v := fmt.Sprintf(`{"id":%d,"item":"item-%d"}`, i, i%13)
		if poison[i] {
			v = fmt.Sprintf("poison-%d{", i)
		}
		if err := w.Produce(&ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny},
			Key: []byte(fmt.Sprintf("customer-%d", i%17)), Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if left := w.Flush(30000); left != 0 {
		t.Fatalf("%d orders not written", left)
	}
	w.Close()

	decode := func(_ context.Context, ev *stage.Event) (order, error) {
		var o order
		if err := json.Unmarshal(ev.Value, &o); err != nil {
			return order{}, fmt.Errorf("decode: %w", err)
		}
		o.key = append([]byte(nil), ev.Key...)
		return o, nil
	}
	enrich := func(_ context.Context, o order) (kafka.Record, error) {
		o.Price = 100 + o.ID%7
		v, err := json.Marshal(o)
		return kafka.Record{Key: o.key, Value: v}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The README's code, verbatim but for the address and the error checks it elides.
	src, err := kafka.NewSource(kafka.Config{
		Brokers: addr, GroupID: "orders", Topics: []string{"orders"},
		Budget: 64 << 20, // the whole data budget: in flight + held back + librdkafka prefetch + producer queue
	})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: addr, Topic: "orders-out"})
	if err != nil {
		t.Fatal(err)
	}

	b := pipeline.New(src, pipeline.WithErrorHandler(prod.DeadLetter("orders-dlq"))) // src brings its budget
	orders := pipeline.Then(b.Source(), stage.Map("decode", decode, stage.Retry(2, 10*time.Millisecond, time.Second)))
	records := pipeline.Then(orders, stage.Map("enrich", enrich, stage.Concurrency(8)))
	pipeline.To(records, prod.Sink("produce"))

	p, err := b.Build() // wiring and configuration errors, each naming its field
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }() // blocks; cancel ctx to drain, commit and return

	kafkatest.WaitFor(t, 60*time.Second, "commits to reach the end of every partition", func() bool {
		sum, err := kafkatest.CommittedSum(addr, "orders", "orders", parts)
		return err == nil && sum == n
	})
	cancel()
	if err := awaitRun(t, done, 60*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	out, err := kafkatest.ReadMessages(addr, "orders-out", n-len(poison), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]int{}
	for _, m := range out {
		var o order
		if err := json.Unmarshal(m.Value, &o); err != nil || o.Price != 100+o.ID%7 || string(m.Key) != fmt.Sprintf("customer-%d", o.ID%17) {
			t.Fatalf("output %q (key %q) is not an enriched order: %v", m.Value, m.Key, err)
		}
		got[o.ID]++
	}
	for i := range n {
		if want := map[bool]int{true: 0, false: 1}[poison[i]]; got[i] != want {
			t.Errorf("order %d is in the output %d times, want %d", i, got[i], want)
		}
	}
	dlq := topicValues(t, addr, "orders-dlq", 1)
	for i := range poison {
		if dlq.m[fmt.Sprintf("poison-%d{", i)] != 1 {
			t.Errorf("poison-%d in the dead-letter topic %d times, want once (dlq %v)", i, dlq.m[fmt.Sprintf("poison-%d{", i)], dlq.m)
		}
	}
	if dlq.distinct() != len(poison) {
		t.Errorf("dead-letter topic holds %v, want the %d poison records", dlq.m, len(poison))
	}
}
