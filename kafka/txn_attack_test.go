package kafka_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Attacks on exactly once (issue 15) through the public API: pipeline shapes (Filter, Batch,
// FlatMap, timeouts), shutdowns and configurations. The fault attacks are in
// txn_attack_faults_test.go.

// fanOut is the attack pipelines' output rule for input value v ("in-i"): none when i%5 == 0,
// two records when i%3 == 0, else one.
func fanOut(v string) []string {
	var i int
	if _, err := fmt.Sscanf(v, "in-%d", &i); err != nil {
		return []string{v + "#bad"}
	}
	switch {
	case i%5 == 0:
		return nil
	case i%3 == 0:
		return []string{v + "#0", v + "#1"}
	}
	return []string{v + "#0"}
}

// fanWant is the output set of inputs in under fanOut, minus those dropped (drop may be nil).
func fanWant(in map[string]bool, drop func(string) bool) map[string]bool {
	want := map[string]bool{}
	for v := range in {
		if drop != nil && drop(v) {
			continue
		}
		for _, o := range fanOut(v) {
			want[o] = true
		}
	}
	return want
}

// dropSevens is the Filter of the attack pipelines: inputs whose index ends in 7 produce nothing.
func dropSevens(v string) bool { return len(v) > 0 && v[len(v)-1] == '7' }

// TestExactlyOnceAttackBatchFlatMap: Filter → Batch (MaxCount 8, no Linger) → FlatMap (0, 1
// or 2 records per input) → the transactional sink. A barrier stops emission while a partial
// batch waits for more input: it must not wait forever (nor commit the batch's inputs without
// their outputs). Every input's outputs are in the read_committed output exactly once.
func TestExactlyOnceAttackBatchFlatMap(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 1000
	in := produceN(t, cl.Addr(), "in", "in", n, 50)
	want := fanWant(in, dropSevens)
	src := newSource(t, eosConfig(cl.Addr(), "g-batch", "tx-batch"))
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) })
	filter := stage.Filter("filter", func(_ context.Context, ev *stage.Event) (bool, error) { return !dropSevens(string(ev.Value)), nil })
	batch := stage.Batch("batch", stage.BatchConfig[*stage.Event]{MaxCount: 8})
	fan := stage.FlatMap("fan", func(_ context.Context, evs []*stage.Event) ([]kafka.Record, error) {
		var out []kafka.Record
		for _, ev := range evs {
			for _, o := range fanOut(string(ev.Value)) {
				out = append(out, kafka.Record{Topic: "out", Key: append([]byte(nil), ev.Key...), Value: []byte("a|" + o)})
			}
		}
		return out, nil
	})
	r := start(t, src, func(b *pipeline.Builder) {
		pipeline.To(pipeline.Then(pipeline.Then(pipeline.Then(b.Source(), filter), batch), fan), prod.Sink("produce"))
	}, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
	waitCommitted(t, cl.Addr(), "g-batch", 4, n)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	st := r.src.Stats()
	t.Logf("transactions: %d committed, %d aborted", st.TxnCommits, st.TxnAborts)
}

// TestExactlyOnceAttackCancelRestart: Run's context is cancelled while transactions are open
// and events are in flight in a slow stage; Run must return promptly. A new instance with the
// same transactional id and group then finishes the input: the output holds every input's
// outputs exactly once (what the first committed is not processed again, what it left open is
// aborted and redone).
func TestExactlyOnceAttackCancelRestart(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 3000
	in := produceN(t, cl.Addr(), "in", "in", n, 50)
	want := fanWant(in, nil)
	run := func(tag string) (*running, *kafka.Producer) {
		src := newSource(t, eosConfig(cl.Addr(), "g-cancel", "tx-cancel"))
		prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = prod.Close(context.Background()) })
		fan := stage.FlatMap("fan", func(_ context.Context, ev *stage.Event) ([]kafka.Record, error) {
			time.Sleep(500 * time.Microsecond)
			var out []kafka.Record
			for _, o := range fanOut(string(ev.Value)) {
				out = append(out, kafka.Record{Topic: "out", Key: append([]byte(nil), ev.Key...), Value: []byte(tag + "|" + o)})
			}
			return out, nil
		}, stage.WithConcurrency(4))
		return start(t, src, func(b *pipeline.Builder) {
			pipeline.To(pipeline.Then(b.Source(), fan), prod.Sink("produce"))
		}, pipeline.WithErrorHandler(prod.DeadLetter("dlq"))), prod
	}
	first, prod1 := run("a")
	kafkatest.WaitFor(t, 60*time.Second, "the first instance to commit a part", func() bool {
		got, err := kafkatest.CommittedSum(cl.Addr(), "g-cancel", "in", 4)
		return err == nil && got >= n/4
	})
	t0 := time.Now()
	if err := first.stop(); err != nil {
		t.Logf("first Run: %v", err)
	}
	if d := time.Since(t0); d > 30*time.Second {
		t.Fatalf("Run took %v to return after its context was cancelled", d)
	}
	if err := prod1.Close(context.Background()); err != nil {
		t.Logf("first producer close: %v", err)
	}
	got, _ := kafkatest.CommittedSum(cl.Addr(), "g-cancel", "in", 4)
	if got >= n {
		t.Fatalf("the first instance committed everything (%d) before the cancel: no mid-stream stop", got)
	}
	second, _ := run("b")
	waitCommitted(t, cl.Addr(), "g-cancel", 4, n)
	if err := second.stop(); err != nil {
		t.Fatal(err)
	}
	values, tags := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	t.Logf("committed %d before the cancel; outputs by a %d, by b %d", got, tags["a"], tags["b"])
}

// TestExactlyOnceAttackCommitFaults: the transaction coordinator answers EndTxn (commit) with
// CONCURRENT_TRANSACTIONS (retriable) a few times, and refuses one TxnOffsetCommit with
// TOPIC_AUTHORIZATION_FAILED (abortable). The transaction is retried or aborted and redone:
// the output holds every input's outputs exactly once and the offsets reach the end.
// fanStage is a FlatMap applying fanOut, tagging each record with tag, after work (may be nil).
func fanStage(tag string, work func(ctx context.Context, ev *stage.Event) error, opts ...stage.Option) *stage.Stage[*stage.Event, kafka.Record] {
	return stage.FlatMap("fan", func(ctx context.Context, ev *stage.Event) ([]kafka.Record, error) {
		if work != nil {
			if err := work(ctx, ev); err != nil {
				return nil, err
			}
		}
		var out []kafka.Record
		for _, o := range fanOut(string(ev.Value)) {
			out = append(out, kafka.Record{Topic: "out", Key: append([]byte(nil), ev.Key...), Value: []byte(tag + "|" + o)})
		}
		return out, nil
	}, opts...)
}

// startFan runs src → fanStage(tag, work, opts) → its transactional producer's sink, dead
// letters to "dlq" through the same producer, with popts.
func startFan(t *testing.T, src *kafka.Source, tag string, work func(ctx context.Context, ev *stage.Event) error, opts []stage.Option, popts ...pipeline.Option) *running {
	t.Helper()
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) })
	return start(t, src, func(b *pipeline.Builder) {
		pipeline.To(pipeline.Then(b.Source(), fanStage(tag, work, opts...)), prod.Sink("produce", stage.WithConcurrency(1)))
	}, append([]pipeline.Option{pipeline.WithErrorHandler(prod.DeadLetter("dlq"))}, popts...)...)
}

// TestExactlyOnceAttackRevokeSlowEvent: member a's stage is stuck on one input for longer
// than RevokeTimeout when member b joins: a's revoke cannot drain, so it aborts; the stuck
// event finishes after the abort and its record must not land in a committed transaction of
// a (b processes that input again). Every input's outputs are in the output exactly once.
// TestExactlyOnceAttackStageTimeout: every tenth input outlasts its stage's timeout, so its
// event fails and goes to the dead-letter topic through the transactional producer, in the
// same transactions as the other outputs. The output and the
// dead letters hold every input exactly once.
func TestExactlyOnceAttackStageTimeout(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 600
	in := produceN(t, cl.Addr(), "in", "in", n, 50)
	slow := func(v string) bool { return len(v) > 0 && v[len(v)-1] == '3' }
	want := fanWant(in, slow)
	for v := range in {
		if slow(v) {
			want[v] = true // its dead letter, the input's value
		}
	}
	work := func(ctx context.Context, ev *stage.Event) error {
		if slow(string(ev.Value)) {
			<-ctx.Done() // outlasts the timeout, then honours it
			return ctx.Err()
		}
		return nil
	}
	r := startFan(t, newSource(t, eosConfig(cl.Addr(), "g-tmo", "tx-tmo")), "a", work, []stage.Option{stage.WithConcurrency(8), stage.WithTimeout(10 * time.Millisecond)})
	waitCommitted(t, cl.Addr(), "g-tmo", 4, n)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want)-n/10, 30*time.Second)
	dead, _ := readCommittedOutput(t, cl.Addr(), "dlq", n/10, 30*time.Second)
	for v, k := range dead {
		values[v] += k
	}
	checkExactlyOnce(t, want, values)
}

// TestExactlyOnceAttackExtremeConfig: the smallest budget (4 × MaxMessageBytes), a 1 ms
// commit interval, one stage call at a time (WithMaxCalls(1)) and a sink of concurrency 1, on
// 8 partitions with uneven load (one partition idle): Build accepts it, so it must finish,
// exactly once.
func TestExactlyOnceAttackExtremeConfig(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 8), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	var keys []string
	for i := range 600 {
		keys = append(keys, fmt.Sprintf("k%d", i%7))
	}
	in := map[string]bool{}
	for p := range int32(7) { // partition 7 stays idle
		k := keys[:300/(int(p)+1)]
		produceLayout(t, cl.Addr(), "in", p, k)
		for i := range k {
			in[fmt.Sprintf("p%d-%d", p, i)] = true
		}
	}
	want := map[string]bool{}
	for v := range in {
		want[v] = true
	}
	cfg := eosConfig(cl.Addr(), "g-xcfg", "tx-xcfg")
	cfg.MaxMessageBytes, cfg.Budget, cfg.CommitInterval = 16<<10, 64<<10, time.Millisecond
	src := newSource(t, cfg)
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) })
	r := start(t, src, func(b *pipeline.Builder) {
		pipeline.To(pipeline.Then(b.Source(), copyStage("a", nil)), prod.Sink("produce", stage.WithConcurrency(1)))
	}, pipeline.WithErrorHandler(prod.DeadLetter("dlq")), pipeline.WithMaxCalls(1))
	total := int64(len(in))
	kafkatest.WaitFor(t, 60*time.Second, "all inputs committed", func() bool {
		got, err := kafkatest.CommittedSum(cl.Addr(), "g-xcfg", "in", 8)
		return err == nil && got == total
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	st := r.src.Stats()
	t.Logf("transactions: %d committed, %d aborted", st.TxnCommits, st.TxnAborts)
}

// TestExactlyOnceAttackBatchFewKeys: OrderKey with 3 keys on one partition and a Batch of 8
// with no Linger: a batch can only fill from the held messages of its own keys, and a
// barrier stops emission above the marks. The batch must be flushed early (source blocked),
// not hold the barrier forever.
func TestExactlyOnceAttackBatchFewKeys(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 1), kafkatest.Topic("out", 1), kafkatest.Topic("dlq", 1))
	var keys []string
	for i := range 300 {
		keys = append(keys, fmt.Sprintf("k%d", i%3))
	}
	produceLayout(t, cl.Addr(), "in", 0, keys)
	want := map[string]bool{}
	for i := range keys {
		want[fmt.Sprintf("p0-%d", i)] = true
	}
	src := newSource(t, eosConfig(cl.Addr(), "g-fewkeys", "tx-fewkeys"))
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) })
	batch := stage.Batch("batch", stage.BatchConfig[*stage.Event]{MaxCount: 8})
	unbatch := stage.FlatMap("unbatch", func(_ context.Context, evs []*stage.Event) ([]kafka.Record, error) {
		out := make([]kafka.Record, 0, len(evs))
		for _, ev := range evs {
			out = append(out, kafka.Record{Topic: "out", Key: append([]byte(nil), ev.Key...), Value: []byte("a|" + string(ev.Value))})
		}
		return out, nil
	})
	r := start(t, src, func(b *pipeline.Builder) {
		pipeline.To(pipeline.Then(pipeline.Then(b.Source(), batch), unbatch), prod.Sink("produce"))
	}, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
	waitCommitted(t, cl.Addr(), "g-fewkeys", 1, int64(len(keys)))
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	st := r.src.Stats()
	t.Logf("transactions: %d committed, %d aborted", st.TxnCommits, st.TxnAborts)
}

// TestExactlyOnceAttackCloseUndelivered: the output's produce requests stop being answered,
// then Run's context is cancelled with short drain and close timeouts: records of the open
// transaction are still in the producer when the source closes. Run must return in bounded
// time; once the output answers again, a new instance with the same transactional id
// finishes: exactly once.
func TestExactlyOnceAttackCloseUndelivered(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 2000
	in := produceN(t, cl.Addr(), "in", "in", n, 50)
	want := fanWant(in, nil)
	k := cl.Kfake()
	var stall atomic.Bool
	var stalled atomic.Int32
	release := make(chan struct{})
	k.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.KeepControl()
		if pr := req.(*kmsg.ProduceRequest); pr.TransactionID != nil && stall.Load() {
			stalled.Add(1)
			k.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	var released atomic.Bool
	free := func() {
		if released.CompareAndSwap(false, true) {
			close(release)
		}
	}
	t.Cleanup(free)
	slow := func(context.Context, *stage.Event) error { time.Sleep(300 * time.Microsecond); return nil }
	cfg := eosConfig(cl.Addr(), "g-undeliv", "tx-undeliv")
	cfg.RevokeTimeout = 2 * time.Second
	first := startFan(t, newSource(t, cfg), "a", slow, []stage.Option{stage.WithConcurrency(4)},
		pipeline.WithDrainTimeout(500*time.Millisecond), pipeline.WithCloseTimeout(500*time.Millisecond))
	kafkatest.WaitFor(t, 60*time.Second, "a quarter committed", func() bool {
		got, err := kafkatest.CommittedSum(cl.Addr(), "g-undeliv", "in", 4)
		return err == nil && got >= n/4
	})
	stall.Store(true)
	kafkatest.WaitFor(t, 30*time.Second, "a produce request stalled", func() bool { return stalled.Load() > 0 })
	t0 := time.Now()
	err := first.stop()
	t.Logf("first Run returned after %v: %v", time.Since(t0), err)
	if d := time.Since(t0); d > 30*time.Second {
		t.Fatalf("Run took %v to return", d)
	}
	stall.Store(false)
	free()
	cfg2 := eosConfig(cl.Addr(), "g-undeliv", "tx-undeliv")
	second := startFan(t, newSource(t, cfg2), "b", nil, []stage.Option{stage.WithConcurrency(4)})
	waitCommitted(t, cl.Addr(), "g-undeliv", 4, n)
	if err := second.stop(); err != nil {
		t.Fatal(err)
	}
	values, tags := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	t.Logf("outputs by a %d, by b %d", tags["a"], tags["b"])
}

// TestExactlyOnceAttackRebalanceStorm: while a processes, a second member joins and leaves
// three times (a restart with the same transactional id each time), each leaving as soon as
// it was assigned partitions, mid-transaction. Exactly once at the end.
// TestExactlyOnceAttackTxnTimeout: one event is stuck (its call ignores its context) for
// longer than the producer's transaction.timeout.ms, holding the barrier: the broker aborts
// the transaction on its own and bumps the producer's epoch, which librdkafka reports as
// fenced (fatal). No other instance uses the id: Run's error (it wraps ErrFenced) must say
// that the transaction timed out, not only that another instance took over. A restart with
// the same id then finishes the input exactly once.
// refuseTxnKey answers requests of key (while ok(req) says so, at most max times) with code
// in the response's top-level or per-partition error field, via build.
// TestExactlyOnceAttackCoordinatorErrors: on a 3-broker cluster, the transaction coordinator
// answers InitProducerID with COORDINATOR_LOAD_IN_PROGRESS at start, then NOT_COORDINATOR
// to AddOffsetsToTxn and to EndTxn, mid-stream. Every input's outputs are in the output
// exactly once and Run does not stop. (Not here: AddPartitionsToTxn refused for all of a
// transaction's first partitions. librdkafka then still sends EndTxn(abort) for a transaction
// the coordinator never registered, which answers INVALID_TXN_STATE, fatal in librdkafka:
// Run stops. Kafka's Java client does not send it, KAFKA-5260.)
// TestExactlyOnceAttackDeadLetterRefused: inputs ending in 7 fail their stage; the first two
// dead-letter produce requests are refused (MESSAGE_TOO_LARGE, not retriable) while a member
// joins and leaves. The dead-letter write fails inside the transaction: it must abort and
// redo, not commit the input without its dead letter. Output plus dead letters hold every
// input exactly once.
// waitCommittedRunning waits until group's committed offsets of "in" add up to n, failing at
// once if r's Run stops first.
func waitCommittedRunning(t *testing.T, r *running, addr, group string, partitions int, n int64) {
	t.Helper()
	kafkatest.WaitFor(t, 60*time.Second, fmt.Sprintf("group %s to commit %d inputs, or Run to stop", group, n), func() bool {
		select {
		case err := <-r.done:
			r.once.Do(func() { r.err = err })
			return true
		default:
		}
		got, err := kafkatest.CommittedSum(addr, group, "in", partitions)
		return err == nil && got == n
	})
	select {
	case <-r.done:
	default:
	}
	if r.err != nil {
		t.Fatalf("Run stopped: %v", r.err)
	}
}

// TestExactlyOnceAttackAbortStorm: every 9th transactional produce request to "out" is
// refused (MESSAGE_TOO_LARGE: its records fail, the transaction aborts) for the first 12
// refusals, while a second member joins and leaves, so that revokes meet doomed transactions
// and aborts meet rebalances. Exactly once at the end, and neither Run stops.
