package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

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
func copyStage(tag string, work func(ev *stage.Event), opts ...stage.Option) *stage.Stage[*stage.Event, kafka.Record] {
	return stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		if work != nil {
			work(ev)
		}
		return kafka.Record{Topic: "out", Key: append([]byte(nil), ev.Key...), Value: []byte(tag + "|" + string(ev.Value))}, nil
	}, append([]stage.Option{stage.WithConcurrency(4)}, opts...)...)
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
		tag, v, ok := strings.Cut(string(m.Value), "|")
		if !ok { // untagged (a dead letter: the input's value)
			tag, v = "", tag
		}
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

// failProduceMidTransaction makes the broker refuse one produce request to "out" with
// MESSAGE_TOO_LARGE (not retriable: its records fail their delivery): the second produce
// request after a transaction ended, so at least one request of the doomed transaction was
// written before it. It returns the number of refusals so far.
func failProduceMidTransaction(cl *kafkatest.Cluster) *atomic.Int32 {
	k := cl.Kfake()
	var sinceEnd, failed atomic.Int32
	k.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
		k.KeepControl()
		sinceEnd.Store(0)
		return nil, nil, false
	})
	k.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if pr.TransactionID == nil || failed.Load() > 0 || sinceEnd.Add(1) != 2 {
			return nil, nil, false
		}
		failed.Add(1)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = pr.Version
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.MessageTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return &failed
}

// TestExactlyOnceAbort: a produce fails in the middle of a transaction. The transaction aborts
// (nothing of it reaches a read_committed reader), the partitions rewind to the committed
// offsets, and the inputs are processed again: the output holds every input exactly once.
func TestExactlyOnceAbort(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	want := produceN(t, cl.Addr(), "in", "in", 3000, 50)
	failed := failProduceMidTransaction(cl)
	r := startEOS(t, newSource(t, eosConfig(cl.Addr(), "g-abort", "tx-abort")), "a", func(*stage.Event) { time.Sleep(100 * time.Microsecond) })
	waitCommitted(t, cl.Addr(), "g-abort", 4, 3000)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if failed.Load() != 1 {
		t.Fatalf("%d produce requests refused, want 1", failed.Load())
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	st := r.src.Stats()
	if st.TxnAborts < 1 { // librdkafka may need a second one (its sequence numbers after the refusal)
		t.Fatalf("%d transactions aborted, want at least 1", st.TxnAborts)
	}
	t.Logf("transactions: %d committed, %d aborted", st.TxnCommits, st.TxnAborts)
}

// TestExactlyOnceRebalance: while a member processes (transactions open, events in flight), a
// second member joins (each gives up partitions: the revoke drains and commits, or aborts) and
// later leaves (the first takes its partitions back from their committed offsets). The output
// holds every input exactly once.
func TestExactlyOnceRebalance(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 4000
	want := produceN(t, cl.Addr(), "in", "in", n, 200)
	slow := func(*stage.Event) { time.Sleep(300 * time.Microsecond) }
	a := startEOS(t, newSource(t, eosConfig(cl.Addr(), "g-reb", "tx-reb-a")), "a", slow)
	kafkatest.WaitFor(t, 60*time.Second, "a to commit a quarter", func() bool {
		got, err := kafkatest.CommittedSum(cl.Addr(), "g-reb", "in", 4)
		return err == nil && got >= n/4
	})
	b := startEOS(t, newSource(t, eosConfig(cl.Addr(), "g-reb", "tx-reb-b")), "b", slow)
	kafkatest.WaitFor(t, 60*time.Second, "b to get partitions and commit", func() bool {
		return b.src.Stats().Assigned > 0 && b.src.Stats().TxnCommits > 0
	})
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, cl.Addr(), "g-reb", 4, n)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	values, tags := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	sa, sb := a.src.Stats(), b.src.Stats()
	if sa.Revokes < 1 || sa.Assigns < 2 || tags["b"] == 0 {
		t.Fatalf("no rebalance mid-stream: a revoked %d times and assigned %d, b wrote %d", sa.Revokes, sa.Assigns, tags["b"])
	}
	t.Logf("a: %d commits, %d aborts, %d revokes; b: %d commits, %d aborts; outputs by a %d, by b %d", sa.TxnCommits, sa.TxnAborts, sa.Revokes, sb.TxnCommits, sb.TxnAborts, tags["a"], tags["b"])
}

// TestExactlyOnceZombieFencing: a second instance with the same transactional id (a restart
// while the first still runs) fences the first: the first's Run stops with ErrFenced and
// nothing it writes from then on is visible; every input is in the output exactly once.
func TestExactlyOnceZombieFencing(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	want := produceN(t, cl.Addr(), "in", "in", 1000, 50)
	old := startEOS(t, newSource(t, eosConfig(cl.Addr(), "g-fence", "tx-fence")), "old", nil)
	waitCommitted(t, cl.Addr(), "g-fence", 4, 1000)
	oldCommits := old.src.Stats().TxnCommits

	young := startEOS(t, newSource(t, eosConfig(cl.Addr(), "g-fence", "tx-fence")), "new", nil)
	kafkatest.WaitFor(t, 60*time.Second, "the new instance to be assigned partitions", func() bool { return young.src.Stats().Assigned > 0 })
	// More input: the old instance still owns partitions and tries to write it.
	more := produceN(t, cl.Addr(), "in", "more", 1000, 50)
	for v := range more {
		want[v] = true
	}
	var err error
	select {
	case err = <-old.done:
		old.once.Do(func() { old.err = err })
	case <-time.After(60 * time.Second):
		t.Fatal("the fenced instance did not stop")
	}
	if !errors.Is(err, kafka.ErrFenced) {
		t.Fatalf("the fenced instance stopped with %v, want ErrFenced", err)
	}
	waitCommitted(t, cl.Addr(), "g-fence", 4, 2000)
	if err := young.stop(); err != nil {
		t.Fatal(err)
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	if st := old.src.Stats(); st.TxnCommits != oldCommits {
		t.Fatalf("the fenced instance committed %d transactions after the new one started", st.TxnCommits-oldCommits)
	}
	// Nothing of "more" was written by the old instance: values carry their writer's tag.
	all, _ := readTagged(t, cl.Addr(), len(want))
	for v, tag := range all {
		if tag == "old" && more[v] {
			t.Fatalf("the fenced instance's output %q is visible", v)
		}
	}
}

// readTagged returns each output value's writer tag (read_committed).
func readTagged(t testing.TB, addr string, n int) (map[string]string, error) {
	t.Helper()
	msgs, err := kafkatest.ReadMessagesWith(map[string]any{"bootstrap.servers": addr, "isolation.level": "read_committed"}, "out", n, 30*time.Second)
	out := map[string]string{}
	for _, m := range msgs {
		tag, v, _ := strings.Cut(string(m.Value), "|")
		out[v] = tag
	}
	return out, err
}
