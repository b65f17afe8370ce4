package kafka_test

// Adversarial tests for API v1 (issue 13), against the public API only: the ownership rule
// (recycled bytes poisoned under -race) must never show poison to correct user code, and the
// ordering gate must never stall, whatever a stage does to the event; the producer belongs to
// its creator and a dead-letter handler on it works through the close phase.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// attackDebug turns the ownership check on for the test (it is on under -race anyway), so the
// tests also expose poisoning without the race detector.
func attackDebug(t *testing.T) {
	was := pool.Debug()
	pool.SetDebug(true)
	t.Cleanup(func() { pool.SetDebug(was) })
}

// produceWithHeaders writes n records to topic: key "k-(i%keys)", value "v-i", header
// "h" = "hv-i"; it waits for every delivery.
func produceWithHeaders(t *testing.T, addr, topic string, n, keys int) {
	t.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": addr, "enable.idempotence": true, "acks": "all", "linger.ms": 5, "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	reports := make(chan ckafka.Event, n)
	for i := range n {
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny},
			Key: []byte(fmt.Sprintf("k-%d", i%keys)), Value: []byte(fmt.Sprintf("v-%d", i)),
			Headers: []ckafka.Header{{Key: "h", Value: []byte(fmt.Sprintf("hv-%d", i))}}}
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

// TestAttack13HeldRecordHeadersNotPoisoned: under OrderKey with many records per key, most
// records are gated (their key is busy) and held before they are emitted. A correct sink that
// reads a header during its call must see the record's header value, never the 0xDB poison of
// the ownership check: poisoning is for bytes the pipeline recycled, not for a record that has
// not even been emitted yet.
func TestAttack13HeldRecordHeadersNotPoisoned(t *testing.T) {
	attackDebug(t)
	const n, keys = 60, 2
	cl := startCluster(t, kafkatest.Topic("in", 1))
	produceWithHeaders(t, cl.Addr(), "in", n, keys)
	var mu sync.Mutex
	bad := map[string]string{} // value -> header seen, when wrong
	seenN := 0
	r := start(t, newSource(t, sourceConfig(cl.Addr(), "g-hdr", "in")), func(b *pipeline.Builder) {
		pipeline.To(b.Source(), stage.Sink("read-header", func(_ context.Context, ev *stage.Event) error {
			v := string(ev.Value) // read during the call: allowed
			h := ""
			for _, x := range ev.Headers {
				if x.Key == "h" {
					h = string(x.Value)
				}
			}
			mu.Lock()
			seenN++
			if want := "h" + v; h != want { // "v-i" -> "hv-i"
				bad[v] = h
			}
			mu.Unlock()
			return nil
		}))
	})
	kafkatest.WaitFor(t, 60*time.Second, "all records completed", func() bool { return r.p.Stats().Completed == n })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		i := 0
		var sample []string
		for v, h := range bad {
			if i++; i > 4 {
				break
			}
			sample = append(sample, fmt.Sprintf("%s: header %q", v, h))
		}
		t.Fatalf("%d of %d records reached the sink with a wrong header value (correct code reading during its call), e.g. %v",
			len(bad), seenN, sample)
	}
}

// TestAttack13ReplacedKeyAndDeadLetterSeeRealBytes: under OrderKey (3 keys, 60 records on one
// partition), a first stage replaces ev.Key and ev.Value with slices of its own and fails every
// fifth record, which goes to the dead-letter topic through a producer shared with the sink
// (src.NewProducer). Expected: the gate releases the key the source admitted (no stall, all
// complete, commits reach the end), the output holds every other record with the stage's
// bytes, and the dead-letter topic holds each failed record once with the bytes the stage put
// in the event, never poison.
func TestAttack13ReplacedKeyAndDeadLetterSeeRealBytes(t *testing.T) {
	attackDebug(t)
	const n, keys = 60, 3
	cl := startCluster(t, kafkatest.Topic("in", 1), kafkatest.Topic("out", 1), kafkatest.Topic("dlq", 1))
	produceN(t, cl.Addr(), "in", "v", n, keys)
	src := newSource(t, sourceConfig(cl.Addr(), "g-rekey", "in"))
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	var inflight sync.Map // key -> struct{}: two events of one key at once is an ordering bug
	overlap := make(chan string, n)
	r := start(t, src, func(b *pipeline.Builder) {
		recs := pipeline.Then(b.Source(), stage.Map("rekey", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
			orig := string(ev.Key)
			if _, busy := inflight.LoadOrStore(orig, struct{}{}); busy {
				overlap <- orig
			}
			defer inflight.Delete(orig)
			ev.Key = []byte("new-" + orig)            // replaced, not written in place
			ev.Value = []byte("X" + string(ev.Value)) // the stage's own bytes: the event's now
			var i int
			fmt.Sscanf(string(ev.Value), "Xv-%d", &i)
			if i%5 == 0 {
				return kafka.Record{}, errors.New("poison")
			}
			return kafka.Record{Key: ev.Key, Value: ev.Value}, nil
		}, stage.WithConcurrency(4), stage.WithUnordered()))
		pipeline.To(recs, prod.Sink("produce"))
	}, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
	kafkatest.WaitFor(t, 60*time.Second, "all records completed", func() bool { return r.p.Stats().Completed == n })
	requireCommittedAtEnd(t, cl.Addr(), "g-rekey", "in", 1)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case k := <-overlap:
		t.Fatalf("two events of key %q in flight at once under OrderKey", k)
	default:
	}
	out := readMessages(t, cl.Addr(), "out", n-n/5, 30*time.Second)
	dlq := readMessages(t, cl.Addr(), "dlq", n/5, 30*time.Second)
	check := func(topic string, ms []*ckafka.Message, failed bool) {
		got := map[string]int{}
		for _, m := range ms {
			v := string(m.Value)
			var i int
			if _, err := fmt.Sscanf(v, "Xv-%d", &i); err != nil || (i%5 == 0) != failed {
				t.Errorf("%s: unexpected value %q (poisoned?)", topic, m.Value)
				continue
			}
			if wantKey := fmt.Sprintf("new-k-%d", i%keys); string(m.Key) != wantKey {
				t.Errorf("%s: record %q has key %q, want %q", topic, v, m.Key, wantKey)
			}
			got[v]++
		}
		for v, c := range got {
			if c != 1 {
				t.Errorf("%s: %q written %d times", topic, v, c)
			}
		}
		if want := n / 5; failed && len(got) != want || !failed && len(got) != n-want {
			t.Errorf("%s: %d distinct records", topic, len(got))
		}
	}
	check("out", out, false)
	check("dlq", dlq, true)
}

// TestAttack13DeadLetterAfterCancelOnSharedProducer: the producer is the user's: its Sink only
// flushes at the end of Run and never closes it, so a dead-letter handler on the same producer
// works through the drain and close phases, and after Run. Every record waits in a Map until
// Run's context is cancelled; then the even ones fail (dead-lettered on the worker during the
// drain) and the odd ones go to the producer's Sink, flushed at the end of Run. Every record
// reaches exactly one of the two topics, commits reach the end, Run returns nil, and the
// producer still accepts a dead letter after Run.
func TestAttack13DeadLetterAfterCancelOnSharedProducer(t *testing.T) {
	attackDebug(t)
	const n = 20
	cl := startCluster(t, kafkatest.Topic("in", 1), kafkatest.Topic("out", 1), kafkatest.Topic("dlq", 1))
	want := produceN(t, cl.Addr(), "in", "v", n, n)
	src := newSource(t, sourceConfig(cl.Addr(), "g-close-dlq", "in"))
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	cancelled := make(chan struct{})
	entered := make(chan struct{}, n)
	r := start(t, src, func(b *pipeline.Builder) {
		recs := pipeline.Then(b.Source(), stage.Map("wait", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
			entered <- struct{}{}
			<-cancelled
			var i int
			fmt.Sscanf(string(ev.Value), "v-%d", &i)
			if i%2 == 0 {
				return kafka.Record{}, errors.New("even")
			}
			return kafka.Record{Key: ev.Key, Value: ev.Value}, nil
		}, stage.WithConcurrency(n), stage.WithUnordered()))
		pipeline.To(recs, prod.Sink("produce", stage.WithConcurrency(2)))
	}, pipeline.WithErrorHandler(prod.DeadLetter("dlq")), pipeline.WithDrainTimeout(30*time.Second))
	for range n {
		select {
		case <-entered:
		case <-time.After(60 * time.Second):
			t.Fatal("records did not reach the stage")
		}
	}
	r.cancel()
	close(cancelled)
	if err := r.stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	out := readAll(t, cl.Addr(), "out", n/2, 30*time.Second)
	dl := readAll(t, cl.Addr(), "dlq", n/2, 30*time.Second)
	for v := range want {
		if out[v]+dl[v] != 1 {
			t.Fatalf("%q is %d times in the output and %d times in the dead-letter topic, want once in all", v, out[v], dl[v])
		}
	}
	requireCommittedAtEnd(t, cl.Addr(), "g-close-dlq", "in", 1)
	if s := prod.Stats(); s.DeadLetters != n/2 {
		t.Fatalf("DeadLetters = %d, want %d", s.DeadLetters, n/2)
	}
	// The pipeline did not close the user's producer: it still writes a dead letter.
	ev := stage.GetEvent()
	ev.Value = append(ev.Value, "still-open"...)
	err = prod.DeadLetter("dlq")(context.Background(), stage.NewFailure("manual", errors.New("x"), 1, []*stage.Event{ev}))
	ev.Release()
	if err != nil {
		t.Fatalf("the producer no longer accepts records after Run (the pipeline closed it?): %v", err)
	}
}

// TestAttack13NewProducerRejectsConflicts: src.NewProducer inherits the source's brokers,
// budget, largest message and logger, and rejects a ProducerConfig that states other values,
// with an error wrapping kafka.ErrConfig and pipeline.ErrInvalid and naming the field.
func TestAttack13NewProducerRejectsConflicts(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 1))
	src := newSource(t, sourceConfig(cl.Addr(), "g-conf", "in"))
	defer src.Close(context.Background())
	for _, c := range []struct {
		field string
		cfg   kafka.ProducerConfig
	}{
		{"Brokers", kafka.ProducerConfig{Brokers: "127.0.0.1:1"}},
		{"Budget", kafka.ProducerConfig{Budget: 8 << 20}},
		{"MaxMessageBytes", kafka.ProducerConfig{MaxMessageBytes: 2 << 20}},
	} {
		p, err := src.NewProducer(c.cfg)
		if err == nil {
			_ = p.Close(context.Background())
			t.Errorf("%s: NewProducer accepted a conflicting value", c.field)
			continue
		}
		if !errors.Is(err, kafka.ErrConfig) || !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: error %v: want ErrConfig and ErrInvalid, naming the field", c.field, err)
		}
	}
	// The same values as the source's are not a conflict.
	p, err := src.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Budget: 16 << 20})
	if err != nil {
		t.Fatalf("NewProducer with the source's own values: %v", err)
	}
	_ = p.Close(context.Background())
}

// TestAttack13HardStopUnderCallCapCommitsNothingPastIt: under WithMaxCalls(1) the only pool
// worker is held by a call (record v-10) that waits for its context; every other call waits
// for a slot. Cancel, and the drain timeout's hard stop abandons the waiting calls and the
// blocked one: Run returns nil, nothing at or after the blocked record is committed, and a
// second run of the group processes every record not processed by the first (at least once).
func TestAttack13HardStopUnderCallCapCommitsNothingPastIt(t *testing.T) {
	attackDebug(t)
	const n = 50
	cl := startCluster(t, kafkatest.Topic("in", 1))
	want := produceN(t, cl.Addr(), "in", "v", n, n)
	blocked := make(chan struct{}, 1)
	var first seen
	r := start(t, newSource(t, sourceConfig(cl.Addr(), "g-cap-stop", "in")), func(b *pipeline.Builder) {
		m := pipeline.Then(b.Source(), stage.Map("block", func(ctx context.Context, ev *stage.Event) (*stage.Event, error) {
			if string(ev.Value) == "v-10" {
				blocked <- struct{}{}
				<-ctx.Done() // honours its context: only the hard stop ends it
				return nil, ctx.Err()
			}
			return ev, nil
		}, stage.WithConcurrency(4)))
		pipeline.To(m, first.sink("collect", nil, stage.WithConcurrency(4)))
	}, pipeline.WithMaxCalls(1), pipeline.WithDrainTimeout(300*time.Millisecond), pipeline.WithCloseTimeout(5*time.Second))
	select {
	case <-blocked:
	case <-time.After(60 * time.Second):
		t.Fatal("v-10 never reached the stage")
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run = %v, want nil (the drain timeout is not an error)", err)
	}
	if c := committed(t, cl.Addr(), "g-cap-stop", "in", 1)[0]; c > 10 {
		t.Fatalf("committed %d: past the record (offset 10) whose call was abandoned at the hard stop", c)
	}
	got := values(first.all())
	if got["v-10"] != 0 {
		t.Fatal("v-10 reached the sink although its call never returned")
	}
	var second seen
	r2 := start(t, newSource(t, sourceConfig(cl.Addr(), "g-cap-stop", "in")), func(b *pipeline.Builder) {
		pipeline.To(b.Source(), second.sink("collect", nil))
	}, pipeline.WithMaxCalls(1))
	kafkatest.WaitFor(t, 60*time.Second, "the second run to reach the end", func() bool {
		return values(second.all())[fmt.Sprintf("v-%d", n-1)] > 0
	})
	requireCommittedAtEnd(t, cl.Addr(), "g-cap-stop", "in", 1)
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}
	for v, c := range values(second.all()) {
		got[v] += c
	}
	requireSet(t, want, got)
}
