package kafka_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// eosConfig is an exactly-once source of topic "in" in group.
func eosConfig(addr, group, txnID string) kafka.Config {
	cfg := sourceConfig(addr, group, "in")
	cfg.ExactlyOnce, cfg.TransactionalID, cfg.CommitInterval = true, txnID, 0 // the mode's default interval
	return cfg
}

// copyStage copies each input to a Record for "out", its value prefixed with tag (so the
// writer is known), after work (may be nil).
func copyStage(tag string, work func(ev *stage.Event)) *stage.Stage[*stage.Event, kafka.Record] {
	return stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		if work != nil {
			work(ev)
		}
		return kafka.Record{Topic: "out", Key: append([]byte(nil), ev.Key...), Value: []byte(tag + "|" + string(ev.Value))}, nil
	}, stage.WithConcurrency(4))
}

// startEOS runs src → copyStage(tag, work) → its transactional producer's sink, in the
// background; the producer is closed after the pipeline stopped.
func startEOS(t testing.TB, src *kafka.Source, tag string, work func(ev *stage.Event)) *running {
	t.Helper()
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		_ = src.Close(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) })
	return start(t, src, func(b *pipeline.Builder) {
		pipeline.To(pipeline.Then(b.Source(), copyStage(tag, work)), prod.Sink("produce"))
	}, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
}

// readCommittedOutput reads topic with a read_committed consumer until at least n records
// arrived and nothing more came for a second (or d passed), and returns each record's value
// with its writer's tag removed, counted.
func readCommittedOutput(t testing.TB, addr, topic string, n int, d time.Duration) (map[string]int, map[string]int) {
	t.Helper()
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": addr, "group.id": fmt.Sprintf("reader-%d", time.Now().UnixNano()),
		"auto.offset.reset": "earliest", "enable.auto.commit": false, "isolation.level": "read_committed", "log_level": 3, "fetch.wait.max.ms": 50})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(topic, nil); err != nil {
		t.Fatal(err)
	}
	values, tags := map[string]int{}, map[string]int{}
	got, last := 0, time.Now()
	for end := time.Now().Add(d); time.Now().Before(end) && (got < n || time.Since(last) < time.Second); {
		m, ok := c.Poll(100).(*ckafka.Message)
		if !ok || m.TopicPartition.Error != nil {
			continue
		}
		tag, v, _ := strings.Cut(string(m.Value), "|")
		values[v]++
		tags[tag]++
		got++
		last = time.Now()
	}
	return values, tags
}

// checkExactlyOnce fails t unless values holds every one of want exactly once, and nothing else.
func checkExactlyOnce(t testing.TB, want map[string]bool, values map[string]int) {
	t.Helper()
	var missing, dup, extra []string
	for v := range want {
		switch n := values[v]; {
		case n == 0:
			missing = append(missing, v)
		case n > 1:
			dup = append(dup, fmt.Sprintf("%s×%d", v, n))
		}
	}
	for v := range values {
		if !want[v] {
			extra = append(extra, v)
		}
	}
	if len(missing)+len(dup)+len(extra) > 0 {
		sort.Strings(missing)
		sort.Strings(dup)
		t.Fatalf("not exactly once: %d missing (%.10v), %d duplicated (%.10v), %d unknown (%.10v)", len(missing), missing, len(dup), dup, len(extra), extra)
	}
}

// TestExactlyOnceCopy: a copy pipeline in exactly-once mode commits its outputs and offsets
// together: a read_committed reader sees each input once, the group's offsets reach the end,
// and transactions were committed (not one commit at close).
func TestExactlyOnceCopy(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	want := produceN(t, cl.Addr(), "in", "in", 2000, 50)
	r := startEOS(t, newSource(t, eosConfig(cl.Addr(), "g-eos", "tx-copy")), "a", nil)
	waitCommitted(t, cl.Addr(), "g-eos", 4, 2000)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	if st := r.src.Stats(); st.TxnCommits < 2 || st.TxnAborts != 0 {
		t.Fatalf("transactions: %d committed, %d aborted; want several commits, no abort", st.TxnCommits, st.TxnAborts)
	}
}

// waitCommitted waits until group's committed offsets of "in" add up to n.
func waitCommitted(t testing.TB, addr, group string, partitions int, n int64) {
	t.Helper()
	kafkatest.WaitFor(t, 60*time.Second, fmt.Sprintf("group %s to commit %d inputs", group, n), func() bool {
		got, err := kafkatest.CommittedSum(addr, group, "in", partitions)
		return err == nil && got == n
	})
}
