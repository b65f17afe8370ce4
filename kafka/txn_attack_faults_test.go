package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Attacks on exactly once (issue 15): broker faults on the transactional calls, rebalances
// and a transaction outliving transaction.timeout.ms.
func TestExactlyOnceAttackCommitFaults(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 2000
	in := produceN(t, cl.Addr(), "in", "in", n, 50)
	want := fanWant(in, nil)
	k := cl.Kfake()
	var ends, endFails, offFails atomic.Int32
	k.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.KeepControl()
		er := req.(*kmsg.EndTxnRequest)
		if !er.Commit || ends.Add(1)%4 != 2 || endFails.Load() >= 6 {
			return nil, nil, false
		}
		endFails.Add(1)
		resp := er.ResponseKind().(*kmsg.EndTxnResponse)
		resp.Version = er.Version
		resp.ErrorCode = kerr.ConcurrentTransactions.Code
		return resp, nil, true
	})
	k.ControlKey(int16(kmsg.TxnOffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.KeepControl()
		or := req.(*kmsg.TxnOffsetCommitRequest)
		if ends.Load() < 3 || offFails.Load() > 0 {
			return nil, nil, false
		}
		offFails.Add(1)
		resp := or.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
		resp.Version = or.Version
		for _, rt := range or.Topics {
			st := kmsg.NewTxnOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	src := newSource(t, eosConfig(cl.Addr(), "g-cfault", "tx-cfault"))
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) })
	fan := stage.FlatMap("fan", func(_ context.Context, ev *stage.Event) ([]kafka.Record, error) {
		time.Sleep(200 * time.Microsecond)
		var out []kafka.Record
		for _, o := range fanOut(string(ev.Value)) {
			out = append(out, kafka.Record{Topic: "out", Key: append([]byte(nil), ev.Key...), Value: []byte("a|" + o)})
		}
		return out, nil
	}, stage.WithConcurrency(4))
	r := start(t, src, func(b *pipeline.Builder) {
		pipeline.To(pipeline.Then(b.Source(), fan), prod.Sink("produce"))
	}, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
	waitCommitted(t, cl.Addr(), "g-cfault", 4, n)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if endFails.Load() == 0 || offFails.Load() != 1 {
		t.Fatalf("faults injected: %d EndTxn, %d TxnOffsetCommit; want some and 1", endFails.Load(), offFails.Load())
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	st := r.src.Stats()
	t.Logf("transactions: %d committed, %d aborted; faults: %d EndTxn, %d TxnOffsetCommit", st.TxnCommits, st.TxnAborts, endFails.Load(), offFails.Load())
}

func TestExactlyOnceAttackRevokeSlowEvent(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 2000
	in := produceN(t, cl.Addr(), "in", "in", n, 50)
	want := fanWant(in, nil)
	stuck := make(chan struct{})
	var once atomic.Bool
	work := func(_ context.Context, ev *stage.Event) error {
		if string(ev.Value) == "in-1001" && once.CompareAndSwap(false, true) {
			close(stuck)
			time.Sleep(3 * time.Second) // ignores its context, as a blocking client call may
		}
		time.Sleep(200 * time.Microsecond)
		return nil
	}
	cfg := eosConfig(cl.Addr(), "g-rslow", "tx-rslow-a")
	cfg.RevokeTimeout = time.Second
	a := startFan(t, newSource(t, cfg), "a", work, []stage.Option{stage.WithConcurrency(4), stage.WithUnordered()})
	select {
	case <-stuck:
	case <-time.After(60 * time.Second):
		t.Fatal("the slow input never reached its stage")
	}
	cfgB := eosConfig(cl.Addr(), "g-rslow", "tx-rslow-b")
	cfgB.RevokeTimeout = time.Second
	b := startFan(t, newSource(t, cfgB), "b", nil, []stage.Option{stage.WithConcurrency(4)})
	waitCommitted(t, cl.Addr(), "g-rslow", 4, n)
	errA, errB := a.stop(), b.stop()
	if errA != nil || errB != nil {
		t.Fatalf("Run: a %v, b %v", errA, errB)
	}
	values, tags := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	sa := a.src.Stats()
	t.Logf("a: %d commits, %d aborts, %d revokes; outputs by a %d, by b %d", sa.TxnCommits, sa.TxnAborts, sa.Revokes, tags["a"], tags["b"])
}

func TestExactlyOnceAttackRebalanceStorm(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 6), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 4000
	in := produceN(t, cl.Addr(), "in", "in", n, 100)
	want := fanWant(in, nil)
	slow := func(context.Context, *stage.Event) error { time.Sleep(400 * time.Microsecond); return nil }
	a := startFan(t, newSource(t, eosConfig(cl.Addr(), "g-storm", "tx-storm-a")), "a", slow, []stage.Option{stage.WithConcurrency(4)})
	kafkatest.WaitFor(t, 60*time.Second, "a to commit some", func() bool { return a.src.Stats().TxnCommits > 2 })
	for round := range 3 {
		c := startFan(t, newSource(t, eosConfig(cl.Addr(), "g-storm", "tx-storm-c")), fmt.Sprintf("c%d", round), slow, []stage.Option{stage.WithConcurrency(4)})
		kafkatest.WaitFor(t, 60*time.Second, "c to be assigned", func() bool { return c.src.Stats().Assigned > 0 })
		if err := c.stop(); err != nil {
			t.Fatalf("round %d: c: %v", round, err)
		}
	}
	waitCommitted(t, cl.Addr(), "g-storm", 6, n)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	values, tags := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	sa := a.src.Stats()
	t.Logf("a: %d commits, %d aborts, %d revokes; outputs %v", sa.TxnCommits, sa.TxnAborts, sa.Revokes, tags)
}

func TestExactlyOnceAttackTxnTimeout(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 2), kafkatest.Topic("out", 2), kafkatest.Topic("dlq", 1))
	const n = 400
	in := produceN(t, cl.Addr(), "in", "in", n, 50)
	want := fanWant(in, nil)
	var once atomic.Bool
	work := func(_ context.Context, ev *stage.Event) error {
		if string(ev.Value) == "in-201" && once.CompareAndSwap(false, true) {
			time.Sleep(4 * time.Second)
		}
		return nil
	}
	run := func(tag string, work func(context.Context, *stage.Event) error) *running {
		src := newSource(t, eosConfig(cl.Addr(), "g-ttmo", "tx-ttmo"))
		prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out", Overrides: map[string]any{"transaction.timeout.ms": 1500, "message.timeout.ms": 1500}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = prod.Close(context.Background()) })
		return start(t, src, func(b *pipeline.Builder) {
			pipeline.To(pipeline.Then(b.Source(), fanStage(tag, work, stage.WithConcurrency(4), stage.WithUnordered())), prod.Sink("produce"))
		}, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
	}
	first := run("a", work)
	var err error
	select {
	case err = <-first.done:
		first.once.Do(func() { first.err = err })
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not stop after its transaction timed out")
	}
	if !errors.Is(err, kafka.ErrFenced) || !strings.Contains(err.Error(), "transaction.timeout.ms") {
		t.Fatalf("Run stopped with %v; want ErrFenced naming transaction.timeout.ms", err)
	}
	second := run("b", nil)
	waitCommitted(t, cl.Addr(), "g-ttmo", 2, n)
	if err := second.stop(); err != nil {
		t.Fatal(err)
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
}

func refuseTxnKey(k interface {
	ControlKey(int16, func(kmsg.Request) (kmsg.Response, error, bool))
	KeepControl()
}, key kmsg.Key, max int32, ok func(kmsg.Request) bool, build func(kmsg.Request) kmsg.Response) *atomic.Int32 {
	var n atomic.Int32
	k.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.KeepControl()
		if !ok(req) || n.Load() >= max { // ok first: it may count
			return nil, nil, false
		}
		n.Add(1)
		return build(req), nil, true
	})
	return &n
}

func TestExactlyOnceAttackCoordinatorErrors(t *testing.T) {
	cl := startCluster(t, kafkatest.Brokers(3), kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 2000
	in := produceN(t, cl.Addr(), "in", "in", n, 50)
	want := fanWant(in, nil)
	k := cl.Kfake()
	var ends atomic.Int32
	initFails := refuseTxnKey(k, kmsg.InitProducerID, 2, func(r kmsg.Request) bool { return r.(*kmsg.InitProducerIDRequest).TransactionalID != nil },
		func(r kmsg.Request) kmsg.Response {
			resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
			resp.Version, resp.ErrorCode = r.GetVersion(), kerr.CoordinatorLoadInProgress.Code
			return resp
		})
	offFails := refuseTxnKey(k, kmsg.AddOffsetsToTxn, 2, func(kmsg.Request) bool { return ends.Load() >= 2 },
		func(r kmsg.Request) kmsg.Response {
			resp := r.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
			resp.Version, resp.ErrorCode = r.GetVersion(), kerr.NotCoordinator.Code
			return resp
		})
	endFails := refuseTxnKey(k, kmsg.EndTxn, 4, func(kmsg.Request) bool { return ends.Add(1)%3 == 0 },
		func(r kmsg.Request) kmsg.Response {
			resp := r.ResponseKind().(*kmsg.EndTxnResponse)
			resp.Version, resp.ErrorCode = r.GetVersion(), kerr.NotCoordinator.Code
			return resp
		})
	slow := func(context.Context, *stage.Event) error { time.Sleep(200 * time.Microsecond); return nil }
	r := startFan(t, newSource(t, eosConfig(cl.Addr(), "g-coord", "tx-coord")), "a", slow, []stage.Option{stage.WithConcurrency(4)})
	kafkatest.WaitFor(t, 60*time.Second, "all committed, or Run stopped", func() bool {
		select {
		case err := <-r.done:
			r.once.Do(func() { r.err = err })
			return true
		default:
		}
		got, err := kafkatest.CommittedSum(cl.Addr(), "g-coord", "in", 4)
		return err == nil && got == n
	})
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	st := r.src.Stats()
	t.Logf("transactions: %d committed, %d aborted; refused: init %d, add offsets %d, end %d",
		st.TxnCommits, st.TxnAborts, initFails.Load(), offFails.Load(), endFails.Load())
	if initFails.Load() == 0 || offFails.Load() == 0 || endFails.Load() == 0 {
		t.Fatal("a fault was not injected")
	}
}

func TestExactlyOnceAttackDeadLetterRefused(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 1000
	in := produceN(t, cl.Addr(), "in", "in", n, 50)
	want := fanWant(in, dropSevens)
	for v := range in {
		if dropSevens(v) {
			want[v] = true
		}
	}
	k := cl.Kfake()
	refused := refuseTxnKey(k, kmsg.Produce, 2, func(r kmsg.Request) bool {
		pr := r.(*kmsg.ProduceRequest)
		return pr.TransactionID != nil && len(pr.Topics) > 0 && pr.Topics[0].Topic == "dlq"
	}, func(r kmsg.Request) kmsg.Response {
		pr := r.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = pr.Version
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.MessageTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp
	})
	work := func(_ context.Context, ev *stage.Event) error {
		time.Sleep(300 * time.Microsecond)
		if dropSevens(string(ev.Value)) {
			return errors.New("rejected")
		}
		return nil
	}
	a := startFan(t, newSource(t, eosConfig(cl.Addr(), "g-dlqref", "tx-dlqref-a")), "a", work, []stage.Option{stage.WithConcurrency(4)})
	kafkatest.WaitFor(t, 60*time.Second, "a dead letter refused", func() bool { return refused.Load() > 0 })
	b := startFan(t, newSource(t, eosConfig(cl.Addr(), "g-dlqref", "tx-dlqref-b")), "b", work, []stage.Option{stage.WithConcurrency(4)})
	kafkatest.WaitFor(t, 60*time.Second, "b to be assigned", func() bool { return b.src.Stats().Assigned > 0 })
	if err := b.stop(); err != nil {
		t.Fatalf("b: %v", err)
	}
	waitCommittedRunning(t, a, cl.Addr(), "g-dlqref", 4, n)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want)-n/10, 30*time.Second)
	dead, _ := readCommittedOutput(t, cl.Addr(), "dlq", n/10, 30*time.Second)
	for v, c := range dead {
		values[v] += c
	}
	checkExactlyOnce(t, want, values)
	t.Logf("dead-letter requests refused: %d; a: %d aborts", refused.Load(), a.src.Stats().TxnAborts)
}

func TestExactlyOnceAttackAbortStorm(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 6), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	const n = 3000
	in := produceN(t, cl.Addr(), "in", "in", n, 100)
	want := fanWant(in, nil)
	k := cl.Kfake()
	var reqs atomic.Int32
	refused := refuseTxnKey(k, kmsg.Produce, 12, func(r kmsg.Request) bool {
		pr := r.(*kmsg.ProduceRequest)
		return pr.TransactionID != nil && len(pr.Topics) > 0 && pr.Topics[0].Topic == "out" && reqs.Add(1)%9 == 0
	}, func(r kmsg.Request) kmsg.Response {
		pr := r.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = pr.Version
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.MessageTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp
	})
	slow := func(context.Context, *stage.Event) error { time.Sleep(300 * time.Microsecond); return nil }
	a := startFan(t, newSource(t, eosConfig(cl.Addr(), "g-astorm", "tx-astorm-a")), "a", slow, []stage.Option{stage.WithConcurrency(4)})
	kafkatest.WaitFor(t, 60*time.Second, "a refusal", func() bool { return refused.Load() > 0 })
	for round := range 2 {
		b := startFan(t, newSource(t, eosConfig(cl.Addr(), "g-astorm", "tx-astorm-b")), fmt.Sprintf("b%d", round), slow, []stage.Option{stage.WithConcurrency(4)})
		kafkatest.WaitFor(t, 60*time.Second, "b to be assigned", func() bool { return b.src.Stats().Assigned > 0 })
		if err := b.stop(); err != nil {
			t.Fatalf("round %d: b: %v", round, err)
		}
	}
	waitCommittedRunning(t, a, cl.Addr(), "g-astorm", 6, n)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	values, tags := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
	sa := a.src.Stats()
	t.Logf("refused %d; a: %d commits, %d aborts, %d revokes; outputs %v", refused.Load(), sa.TxnCommits, sa.TxnAborts, sa.Revokes, tags)
}
