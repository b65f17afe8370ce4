package faulttest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/stage"
)

// TestFaultRebalanceMidBatch: events wait in a Batch stage when a second member joins and the
// first one's partitions are revoked; the revoke waits for them (the batch flushes on its
// linger), commits, and nothing is lost.
func TestFaultRebalanceMidBatch(t *testing.T) {
	const n, parts = 3000, 4
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	a := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", batch: 64, work: slowWork})
	kafkatest.WaitFor(t, 30*time.Second, "a quarter processed", func() bool { return s.distinct() >= n/4 })
	b := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", batch: 64, work: slowWork})
	kafkatest.WaitFor(t, 60*time.Second, "all processed", func() bool { return s.distinct() == n })
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	for _, r := range []*run{a, b} {
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
	}
	if st := a.src.Stats(); st.RevokeTimeouts != 0 || st.LateCompletions != 0 {
		t.Fatalf("revoke did not wait for the batched events: %+v", st)
	}
}

// TestFaultIntermittentSink: a sink fails intermittently: one record in three fails its first
// attempt (Retry recovers it), one in twenty fails every attempt and goes to the dead-letter
// topic. Every record is either processed or dead-lettered, and the commits reach the end.
func TestFaultIntermittentSink(t *testing.T) {
	const n = 1000
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 2), kafkatest.Topic("dlq", 1))
	want := produce(t, cl.Addr(), "in", "v", n)
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	var mu sync.Mutex
	attempts := map[string]int{}
	flaky := func(_ context.Context, ev *stage.Event) error {
		i, _ := strconv.Atoi(strings.TrimPrefix(string(ev.Value), "v-"))
		mu.Lock()
		attempts[string(ev.Value)]++
		first := attempts[string(ev.Value)] == 1
		mu.Unlock()
		if i%20 == 0 || (i%3 == 0 && first) {
			return errors.New("downstream unavailable")
		}
		return nil
	}
	s := newSeen()
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 4, work: flaky, handler: prod.DeadLetter("dlq"),
		sinkOpt: []stage.Option{stage.WithRetry(stage.Retry{Retries: 2, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})}})
	const poison = n / 20
	kafkatest.WaitFor(t, 30*time.Second, "every record processed or dead-lettered", func() bool {
		return s.distinct() == n-poison && prod.Stats().DeadLetters == poison
	})
	dl, err := kafkatest.ReadMessages(cl.Addr(), "dlq", poison, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range dl {
		s.add(string(m.Value))
	}
	checkAll(t, s, want, cl.Addr(), "g", "in", 2)
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	if d := s.dups(); d != 0 {
		t.Fatalf("%d duplicates: a retried record was processed twice or dead-lettered too", d)
	}
}
