package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestExactlyOnceHeldBehindBusyKey: offset 1 waits (held) behind offset 0 of the same key,
// which is slow, while offsets 2..9 of other keys finish (the copy stage is unordered). A
// barrier must not commit a transaction with the outputs of 2..9 but an offset below them:
// after 0 finishes it still emits 1 and waits for it. Checked while 1 is in its stage: every
// output a read_committed reader sees is of an input below the group's committed offset.
func TestExactlyOnceHeldBehindBusyKey(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 1), kafkatest.Topic("out", 1), kafkatest.Topic("dlq", 1))
	keys := []string{"slow", "slow", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"}
	produceLayout(t, cl.Addr(), "in", 0, keys)
	rel0, rel1, at1 := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var others atomic.Int32
	work := func(ev *stage.Event) {
		switch {
		case string(ev.Key) != "slow":
			others.Add(1)
		case ev.Offset == 0:
			<-rel0
		default:
			close(at1)
			<-rel1
		}
	}
	src := newSource(t, eosConfig(cl.Addr(), "g-held", "tx-held"))
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) })
	r := start(t, src, func(b *pipeline.Builder) {
		pipeline.To(pipeline.Then(b.Source(), copyStage("a", work, stage.WithUnordered())), prod.Sink("produce"))
	})
	t.Cleanup(func() {
		select {
		case <-rel0:
		default:
			close(rel0)
		}
		select {
		case <-rel1:
		default:
			close(rel1)
		}
	})
	kafkatest.WaitFor(t, 30*time.Second, "offsets 2..9 delivered and a barrier started", func() bool {
		return others.Load() == 8 && prod.Stats().Outstanding == 0 && kafka.TxnBarriers(r.src) > 0
	})
	close(rel0)
	select {
	case <-at1:
	case <-time.After(30 * time.Second):
		t.Fatal("offset 1 never reached its stage")
	}
	outs, _ := readCommittedOutput(t, cl.Addr(), "out", 0, 5*time.Second)
	off := int64(0)
	if c, err := kafkatest.Committed(cl.Addr(), "g-held", "in", 1); err == nil && c[0] > 0 {
		off = c[0]
	}
	for v := range outs {
		var i int64
		if _, err := fmt.Sscanf(v, "p0-%d", &i); err != nil || i >= off {
			t.Fatalf("output %q is visible while the committed offset is %d: its input would be processed again after a crash", v, off)
		}
	}
	close(rel1)
	waitCommitted(t, cl.Addr(), "g-held", 1, 10)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for i := range keys {
		want[fmt.Sprintf("p0-%d", i)] = true
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", len(want), 30*time.Second)
	checkExactlyOnce(t, want, values)
}

// TestExactlyOnceDeadLetter: inputs a stage rejects go to the dead-letter topic through the
// transactional producer, in the same transactions: read_committed readers of the output and
// of the dead-letter topic together see every input exactly once.
func TestExactlyOnceDeadLetter(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	want := produceN(t, cl.Addr(), "in", "in", 1000, 50)
	src := newSource(t, eosConfig(cl.Addr(), "g-dlq", "tx-dlq"))
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) })
	reject := stage.Map("reject", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
		if strings.HasSuffix(string(ev.Value), "7") {
			return nil, errors.New("rejected")
		}
		return ev, nil
	})
	r := start(t, src, func(b *pipeline.Builder) {
		pipeline.To(pipeline.Then(pipeline.Then(b.Source(), reject), copyStage("a", nil)), prod.Sink("produce"))
	}, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
	waitCommitted(t, cl.Addr(), "g-dlq", 4, 1000)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	values, _ := readCommittedOutput(t, cl.Addr(), "out", 900, 30*time.Second)
	dead, _ := readCommittedOutput(t, cl.Addr(), "dlq", 100, 30*time.Second)
	for v, n := range dead { // dead letters carry the input's value, untagged
		values[v] += n
	}
	checkExactlyOnce(t, want, values)
	if len(dead) != 100 {
		t.Fatalf("%d dead letters, want 100", len(dead))
	}
}
