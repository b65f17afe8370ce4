package faulttest

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/stage"
)

// TestFaultDeadLetterTopicUnavailable: the dead-letter topic refuses every produce while a
// poison message fails. The dead-letter handler keeps retrying (backpressure): the poison is
// neither committed past nor lost. Once the topic accepts records again the poison lands in it
// and the commits reach the end.
func TestFaultDeadLetterTopicUnavailable(t *testing.T) {
	const n = 200
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1), kafkatest.Topic("dlq", 1))
	want := produce(t, cl.Addr(), "in", "v", n)
	const poison = "v-100" // offset 100 of the single partition
	refuse := cl.Kfake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "dlq", Err: kerr.NotLeaderForPartition, Count: -1})
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10,
		Overrides: map[string]any{"message.timeout.ms": 1000}})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	s := newSeen()
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 2, handler: prod.DeadLetter("dlq"),
		work: func(_ context.Context, ev *stage.Event) error {
			if string(ev.Value) == poison {
				return errors.New("undecodable")
			}
			return nil
		}})
	// Everything but the poison and the two later records of its key (k26: v-137, v-174; the
	// default OrderKey keeps them behind it) is processed; the DLQ keeps refusing the poison for
	// several delivery timeouts, and meanwhile the commit never passes it.
	kafkatest.WaitFor(t, 30*time.Second, "all but the poison's key processed", func() bool { return s.distinct() == n-3 })
	if err := refuse.Wait(context.Background(), 20); err != nil {
		t.Fatal(err)
	}
	if c := committedSum(t, cl.Addr(), "g", "in", 1); c > 100 {
		t.Fatalf("committed %d while the poison (offset 100) is not dead-lettered", c)
	}
	refuse.Remove()
	s.add(poison) // it goes to the DLQ now, and its key's later records follow
	kafkatest.WaitFor(t, 30*time.Second, "the poison's key to go on", func() bool { return s.distinct() == n })
	checkAll(t, s, want, cl.Addr(), "g", "in", 1)
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	dl, err := kafkatest.ReadMessages(cl.Addr(), "dlq", 1, 30*time.Second)
	if err != nil || len(dl) != 1 || string(dl[0].Value) != poison {
		t.Fatalf("dead-letter topic: %d records (%v), want the poison", len(dl), err)
	}
}

// TestFaultCloseDuringRebalance: a second member joins and the first is stopped while the group
// rebalances; the first drains and returns nil, the second finishes, nothing is lost.
func TestFaultCloseDuringRebalance(t *testing.T) {
	const n, parts = 3000, 4
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	a := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 2, work: slowWork})
	kafkatest.WaitFor(t, 30*time.Second, "a quarter processed", func() bool { return s.distinct() >= n/4 })
	b := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 2, work: slowWork})
	kafkatest.WaitFor(t, 30*time.Second, "the rebalance to start", func() bool { return a.src.Stats().Rebalances > 1 })
	if err := a.wait(t); err != nil {
		t.Fatalf("closing during the rebalance: %v", err)
	}
	kafkatest.WaitFor(t, 60*time.Second, "the rest processed", func() bool { return s.distinct() == n })
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	if err := b.wait(t); err != nil {
		t.Fatal(err)
	}
}

// TestFaultKIP848Group: the same consume with the KIP-848 consumer group protocol
// (group.protocol=consumer, supported by librdkafka 2.11 and the embedded broker), two members,
// the second joining mid-stream: both own partitions at the same time, both process records,
// and nothing is lost. The first member paces itself while the second joins, so records are
// left for the second.
func TestFaultKIP848Group(t *testing.T) {
	const n, parts = 2000, 4
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	kip848 := func(c *kafka.Config) {
		// KIP-848 refuses the classic session and heartbeat settings.
		c.Overrides = map[string]any{"group.protocol": "consumer", "fetch.wait.max.ms": 50}
	}
	var pace atomic.Bool
	var byA, byB partitionCount // records each member processed, per partition
	a := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 2, cfg: kip848,
		work: func(_ context.Context, ev *stage.Event) error {
			byA.add(ev.Partition)
			if pace.Load() {
				time.Sleep(20 * time.Millisecond) // pacing, not synchronisation: ~100 records/s
			}
			return nil
		}})
	kafkatest.WaitFor(t, 30*time.Second, "a quarter processed", func() bool { return s.distinct() >= n/4 })
	pace.Store(true)
	b := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 2, cfg: kip848,
		work: func(_ context.Context, ev *stage.Event) error { byB.add(ev.Partition); return nil }})
	var sa, sb int64
	kafkatest.WaitFor(t, 30*time.Second, "both members to own partitions", func() bool {
		sa, sb = a.src.Stats().Assigned, b.src.Stats().Assigned
		return sa > 0 && sb > 0
	})
	if sa+sb > parts {
		t.Fatalf("A owns %d partitions and B %d of %d", sa, sb, parts)
	}
	pace.Store(false)
	kafkatest.WaitFor(t, 60*time.Second, "all processed", func() bool { return s.distinct() == n })
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	for _, r := range []*run{a, b} {
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
	}
	na, nb := byA.total(), byB.total()
	if na == 0 || nb == 0 {
		t.Fatalf("A processed %d records (%v), B %d (%v): both members should have", na, byA.all(), nb, byB.all())
	}
	t.Logf("A processed %v, B %v (records per partition)", byA.all(), byB.all())
}

// partitionCount counts records per partition. Safe for concurrent use; the zero value is ready.
type partitionCount struct {
	mu sync.Mutex
	m  map[int32]int
}

func (c *partitionCount) add(p int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[int32]int{}
	}
	c.m[p]++
}

func (c *partitionCount) all() map[int32]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

func (c *partitionCount) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.m {
		n += k
	}
	return n
}
