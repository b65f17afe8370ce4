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
			}, stage.WithTimeout(100*time.Millisecond)))
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
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "orders-out"}) // the source's brokers, budget and largest message
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background()) // the producer is yours: close it after Run (the pipeline only flushes it)

	b := pipeline.New(src, pipeline.WithErrorHandler(prod.DeadLetter("orders-dlq"))) // src brings its budget
	orders := pipeline.Then(b.Source(), stage.Map("decode", decode, stage.WithRetry(stage.Retry{Retries: 2, Backoff: 10 * time.Millisecond, MaxBackoff: time.Second})))
	records := pipeline.Then(orders, stage.Map("enrich", enrich, stage.WithConcurrency(8)))
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

// keyWatch counts, per member, the events of each partition's key between the first stage's
// call and the source's Complete: two at once is a violation of OrderKey.
type keyWatch struct {
	*kafka.Source
	mu         sync.Mutex
	busy       map[string]map[stage.Origin]bool // partition/key → events in flight
	where      map[stage.Origin]string
	violations int
	seen       atomic.Int64
}

func newKeyWatch(src *kafka.Source) *keyWatch {
	return &keyWatch{Source: src, busy: map[string]map[stage.Origin]bool{}, where: map[stage.Origin]string{}}
}

// enter records ev as in flight under its partition and key.
func (w *keyWatch) enter(t *testing.T, ev *stage.Event) {
	o := ev.Origin()
	k := fmt.Sprintf("%d/%s", o.Partition, ev.Key)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen.Add(1)
	if w.busy[k] == nil {
		w.busy[k] = map[stage.Origin]bool{}
	}
	w.busy[k][o] = true
	w.where[o] = k
	if len(w.busy[k]) > 1 {
		w.violations++
		t.Errorf("key %s: %d events in flight at once: %v", k, len(w.busy[k]), w.busy[k])
	}
}

func (w *keyWatch) leave(ev *stage.Event) {
	o := ev.Origin()
	w.mu.Lock()
	if k, ok := w.where[o]; ok {
		delete(w.busy[k], o)
		delete(w.where, o)
	}
	w.mu.Unlock()
}

func (w *keyWatch) Complete(ev *stage.Event, ok bool) { w.leave(ev); w.Source.Complete(ev, ok) }

func (w *keyWatch) CompleteMany(evs []*stage.Event, ok []bool) {
	for _, ev := range evs {
		w.leave(ev)
	}
	w.Source.CompleteMany(evs, ok)
}

// member is one consumer of "in": copy → producer sink to "out" (every 20th record to "bad",
// which refuses it until message.timeout.ms, so its delivery fails and goes to the dead-letter
// handler on a producer of its own, writing to "dlq").
type member struct {
	w    *keyWatch
	p    *pipeline.Pipeline
	prod *kafka.Producer
	dlqP *kafka.Producer
	done chan error
	stop context.CancelFunc
}

func startMember(t *testing.T, addr string, drain, closeT time.Duration) *member {
	t.Helper()
	src := attackSource(t, addr, nil)
	w := newKeyWatch(src)
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: addr, Topic: "out", Logger: kafkatest.Logger(), Budget: 8 << 20,
		MaxMessageBytes: 256 << 10, Overrides: map[string]any{"message.timeout.ms": 300}})
	if err != nil {
		t.Fatal(err)
	}
	dlqP, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: addr, Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	b := pipeline.New(w, append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()), pipeline.WithDrainTimeout(drain),
		pipeline.WithCloseTimeout(closeT), pipeline.WithErrorHandler(dlqP.DeadLetter("dlq")))...)
	recs := pipeline.Then(b.Source(), stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		w.enter(t, ev)
		time.Sleep(2 * time.Millisecond)
		r := kafka.Record{Key: append([]byte(nil), ev.Key...), Value: append([]byte(nil), ev.Value...)}
		var i int
		if _, err := fmt.Sscanf(string(ev.Value), "v-%d", &i); err == nil && i%20 == 0 {
			r.Topic = "bad"
		}
		return r, nil
	}, stage.WithConcurrency(4)))
	pipeline.To(recs, prod.Sink("produce", stage.WithConcurrency(4)))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{w: w, p: p, prod: prod, dlqP: dlqP, done: make(chan error, 1), stop: cancel}
	go func() { m.done <- p.Run(ctx) }()
	return m
}

// TestFaultAttack4RebalanceWithSlowDeadLetters: member A copies "in" (4 partitions, 400
// records) to "out"; every 20th record's delivery fails and waits on the error-handling queue
// for a dead-letter topic answering each produce after 300 ms. Meanwhile member B joins
// (and gets partitions), then leaves. Never two events of one key in flight on a member;
// never a commit past a record neither in "out" nor in "dlq" (checked after B joined, after it
// left, at the end); Run returns within drain + 2 × close; everything reaches out ∪ dlq and the
// commits reach the end; no goroutine left.
func TestFaultAttack4RebalanceWithSlowDeadLetters(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const drain, closeT, n, parts = 3 * time.Second, 3 * time.Second, 400, 4
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts), kafkatest.Topic("out", parts), kafkatest.Topic("bad", 1), kafkatest.Topic("dlq", 1))
	addr := cl.Addr()
	want := produce(t, addr, "in", "v", n)
	refuseProduce(cl, "bad")
	slowProduceTo(cl, "dlq", 300*time.Millisecond)
	stopMember := func(m *member, what string) error {
		m.stop()
		began := time.Now()
		err := awaitRun(t, m.done, drain+2*closeT+10*time.Second)
		if took := time.Since(began); took > drain+2*closeT+time.Second {
			t.Errorf("%s: Run took %v, want within drain + 2 × close (%v)", what, took, drain+2*closeT)
		}
		_ = m.prod.Close(context.Background()) // the members' producers are the test's: Run only flushed the sink's
		_ = m.dlqP.Close(context.Background())
		t.Logf("%s: Run returned after %v: %v; sink %+v; dlq %+v", what, time.Since(began).Round(time.Millisecond), err, m.prod.Stats(), m.dlqP.Stats())
		return err
	}
	noCommitPastUnwritten := func(when string) {
		committedBelowNow(t, addr, parts, n, when)
	}

	a := startMember(t, addr, drain, closeT)
	kafkatest.WaitFor(t, 30*time.Second, "A's first dead letters", func() bool { return a.dlqP.Stats().DeadLetters >= 2 })
	b := startMember(t, addr, drain, closeT)
	kafkatest.WaitFor(t, 30*time.Second, "B to process records", func() bool { return b.w.seen.Load() >= 10 })
	noCommitPastUnwritten("after B joined")
	if err := stopMember(b, "B"); err != nil {
		t.Logf("B: %v (a dead letter the close phase gave up on is not committed)", err)
	}
	noCommitPastUnwritten("after B left")
	kafkatest.WaitFor(t, 60*time.Second, "commits to reach the end", func() bool { return committedOr(addr, parts) == n })
	if err := stopMember(a, "A"); err != nil {
		t.Errorf("A: Run after everything was committed: %v, want nil", err)
	}
	out, dlq := topicValues(t, addr, "out", parts), topicValues(t, addr, "dlq", 1)
	for v := range want {
		var i int
		_, _ = fmt.Sscanf(v, "v-%d", &i)
		if got := map[bool]int{true: dlq.m[v], false: out.m[v]}[i%20 == 0]; got == 0 {
			t.Errorf("%s lost: out %d, dlq %d", v, out.m[v], dlq.m[v])
		}
	}
	t.Logf("A saw %d, B saw %d; out %d, dlq %d; key violations A %d, B %d", a.w.seen.Load(), b.w.seen.Load(), out.distinct(), dlq.distinct(), a.w.violations, b.w.violations)
}

// committedBelowNow reads the committed offsets first, then "out" and "dlq": every record of
// "in" below its partition's committed offset must be in one of them (read after the commit,
// they can only hold more).
func committedBelowNow(t *testing.T, addr string, parts, n int, when string) {
	t.Helper()
	committed, err := kafkatest.Committed(addr, "g", "in", parts)
	if err != nil {
		t.Fatal(err)
	}
	out, dlq := topicValues(t, addr, "out", parts), topicValues(t, addr, "dlq", 1)
	in, err := kafkatest.ReadMessages(addr, "in", n, 30*time.Second)
	if err != nil || len(in) != n {
		t.Fatalf("reading in: %d of %d, %v", len(in), n, err)
	}
	for _, m := range in {
		v := string(m.Value)
		if int64(m.TopicPartition.Offset) < committed[m.TopicPartition.Partition] && out.m[v] == 0 && dlq.m[v] == 0 {
			t.Errorf("%s: in[%d]@%d (%s) committed (offset %d) but neither written nor dead-lettered",
				when, m.TopicPartition.Partition, m.TopicPartition.Offset, v, committed[m.TopicPartition.Partition])
		}
	}
	t.Logf("%s: committed %v, out %d, dlq %d", when, committed, out.distinct(), dlq.distinct())
}
