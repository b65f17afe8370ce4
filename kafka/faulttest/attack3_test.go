package faulttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Attack round 3: hostile conditions against the public API, real librdkafka over TCP.

// TestFaultAttack3StuckKeyReplayWindow: under OrderKey (37 keys), the record "a-0" blocks its
// call; the rest of its partition keeps finishing until the span bound (MaxInFlightPerPartition
// 64) pauses the partition. Then Run stops hard (drain timeout 0: the stuck call gets a
// cancelled context). A second consumer of the group processes again at most
// MaxInFlightPerPartition records of what the first finished (plus what finished since the last
// commit on the other partition, which the final commit covers), and then everything, with
// the commits at the end.
func TestFaultAttack3StuckKeyReplayWindow(t *testing.T) {
	const n, parts, span = 1000, 2, 64
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "a", n)
	first := newSeen()
	stuck := make(chan struct{})
	cfg := func(c *kafka.Config) { c.MaxInFlightPerPartition, c.Ordering = span, kafka.OrderKey }
	r := start(t, cl.Addr(), first, runOpts{group: "g", topic: "in", conc: 16, cfg: cfg,
		pipe: []pipeline.Option{pipeline.WithDrainTimeout(0), pipeline.WithCloseTimeout(3 * time.Second)},
		work: func(ctx context.Context, ev *stage.Event) error {
			if string(ev.Value) == "a-0" {
				close(stuck)
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}})
	<-stuck
	// The other partition runs to its end; the stuck one reads at most span records from a-0.
	kafkatest.WaitFor(t, 60*time.Second, "the stuck partition paused at its span bound, the other done", func() bool {
		return r.src.Stats().Paused == 1 && r.p.Stats().Completed+1 == r.p.Stats().Emitted && first.distinct() >= n/2-span
	})
	st := r.p.Stats()
	done1 := first.distinct()
	if err := r.wait(t); err != nil {
		t.Logf("first run: %v", err)
	}
	if first.distinct() != done1 {
		t.Fatalf("processed %d → %d after the pipeline was blocked", done1, first.distinct())
	}
	rest := map[string]bool{} // first has stopped: read without its lock
	for v := range want {
		if first.m[v] == 0 {
			rest[v] = true
		}
	}
	second := newSeen()
	r2 := start(t, cl.Addr(), second, runOpts{group: "g", topic: "in", conc: 16, cfg: cfg})
	kafkatest.WaitFor(t, 60*time.Second, "the rest processed", func() bool { return len(second.missing(rest)) == 0 })
	again := second.distinct() - len(rest)
	t.Logf("first run processed %d of %d (emitted %d); the second processed %d, %d of them again", done1, n, st.Emitted, second.distinct(), again)
	if again > span {
		t.Fatalf("%d records processed again after a hard stop, over MaxInFlightPerPartition %d", again, span)
	}
	kafkatest.WaitFor(t, 30*time.Second, "commits to reach the end", func() bool {
		return committedSum(t, cl.Addr(), "g", "in", parts) == n
	})
	if err := r2.wait(t); err != nil {
		t.Fatal(err)
	}
}

// TestFaultAttack3OversizedOnSeveralPartitions: a record larger than the in-flight budget on
// each of three partitions while the dead-letter topic refuses every produce for 4 s (past
// max.poll.interval.ms 6 s is not needed: Poll must simply never wait for the handler). The
// records around them are processed meanwhile, no rebalance happens, no partition's commit
// passes its oversized record; once the topic is back each oversized record is dead-lettered
// exactly once and the commits reach the end.
func TestFaultAttack3OversizedOnSeveralPartitions(t *testing.T) {
	const parts, bigParts, small = 4, 3, 40 // partition 3 has no oversized record
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts), kafkatest.Topic("dlq", 1))
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": cl.Addr(), "enable.idempotence": true, "acks": "all", "message.max.bytes": 2 << 20, "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	topic := "in"
	want := map[string]bool{}
	total := parts*2*small + bigParts
	reports := make(chan ckafka.Event, total)
	put := func(part int32, v []byte) {
		if err := p.Produce(&ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: part}, Value: v}, reports); err != nil {
			t.Fatal(err)
		}
	}
	bigs := map[string]bool{}
	for part := range int32(parts) {
		for i := range small {
			v := fmt.Sprintf("p%d-a-%d", part, i)
			want[v] = true
			put(part, []byte(v))
		}
		if part < bigParts {
			big := append([]byte(fmt.Sprintf("p%d-big-", part)), bytes.Repeat([]byte("x"), 900<<10)...)
			bigs[string(big[:8])] = true
			put(part, big) // offset small
		}
		for i := range small {
			v := fmt.Sprintf("p%d-b-%d", part, i)
			want[v] = true
			put(part, []byte(v))
		}
	}
	for range total {
		if m := (<-reports).(*ckafka.Message); m.TopicPartition.Error != nil {
			t.Fatal(m.TopicPartition.Error)
		}
	}
	p.Close()
	down := refuseProduce(cl, "dlq")
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 1 << 20,
		Overrides: map[string]any{"message.timeout.ms": 1000}})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	dlq := prod.DeadLetter("dlq")
	var calls atomic.Int64
	s := newSeen()
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 4,
		cfg: func(c *kafka.Config) { c.Budget, c.MaxMessageBytes = 1<<20, 256<<10 },
		handler: func(ctx context.Context, f *stage.Failure) error {
			if !errors.Is(f.Err, pipeline.ErrTooLarge) {
				t.Errorf("handler got %v, want ErrTooLarge", f)
			}
			calls.Add(1)
			return dlq(ctx, f)
		}})
	// Records before each oversized one, and every record of the partition without one, are
	// processed while the dead-letter topic is down.
	flowing := map[string]bool{}
	for v := range want {
		if strings.Contains(v, "-a-") || strings.HasPrefix(v, fmt.Sprintf("p%d-", bigParts)) {
			flowing[v] = true
		}
	}
	kafkatest.WaitFor(t, 30*time.Second, "the error handler called", func() bool { return calls.Load() > 0 })
	for end := time.Now().Add(20 * time.Second); len(s.missing(flowing)) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			miss := s.missing(flowing)
			sort.Strings(miss)
			byPart := map[string]int{}
			s.mu.Lock()
			for v := range s.m {
				byPart[v[:4]]++
			}
			s.mu.Unlock()
			t.Logf("processed by partition and side: %v", byPart)
			t.Fatalf("while the dead-letter topic is down, %d of the %d records not behind an oversized one are not processed (e.g. %v); processed %d of %d, handler calls %d, paused partitions %d",
				len(miss), len(flowing), miss[:min(8, len(miss))], s.distinct(), len(want), calls.Load(), r.src.Stats().Paused)
		}
	}
	rebalances := r.src.Stats().Rebalances
	downAt := time.Now()
	for time.Since(downAt) < 4*time.Second {
		t.Logf("processed %d of %d, handler calls %d, paused %d", s.distinct(), len(want), calls.Load(), r.src.Stats().Paused)
		if st := r.src.Stats(); st.Rebalances != rebalances || st.Assigned != parts {
			t.Fatalf("rebalance while the dead-letter topic was down: %d → %d, assigned %d", rebalances, st.Rebalances, st.Assigned)
		}
		cs, err := kafkatest.Committed(cl.Addr(), "g", "in", parts)
		if err != nil {
			t.Fatal(err)
		}
		for part, c := range cs[:bigParts] {
			if c > small {
				t.Fatalf("partition %d committed %d, past its oversized record (offset %d) before it was dead-lettered", part, c, small)
			}
		}
		time.Sleep(100 * time.Millisecond) // sampling a condition that must hold throughout
	}
	down.Remove()
	kafkatest.WaitFor(t, 30*time.Second, "commits to reach the end", func() bool {
		return committedSum(t, cl.Addr(), "g", "in", parts) == int64(total)
	})
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	dl, err := kafkatest.ReadMessages(cl.Addr(), "dlq", parts+1, 3*time.Second) // one more: a duplicate would show
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range dl {
		got[string(m.Value[:8])]++
	}
	for b := range bigs {
		if got[b] != 1 {
			t.Fatalf("dead-lettered records %v: want each of %v once", got, bigs)
		}
	}
	if len(got) != len(bigs) || s.dups() != 0 {
		t.Fatalf("dead-lettered %v, duplicates processed %d", got, s.dups())
	}
}
