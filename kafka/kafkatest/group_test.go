package kafkatest_test

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestGroupRebalance checks a second member joining and leaving a group is
// handled promptly: with librdkafka's heartbeat.interval.ms lowered for the
// classic protocol, and with kafkatest's default broker heartbeat for
// KIP-848.
func TestGroupRebalance(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"classic", []string{"heartbeat.interval.ms", "100"}},
		{"consumer-kip848", []string{"group.protocol", "consumer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 20*time.Second)
			c := kafkatest.StartT(t, kafkatest.Topic("e", 4))
			assigned := func(cons *kafka.Consumer) int {
				t.Helper()
				a, err := cons.Assignment()
				if err != nil {
					t.Fatal(err)
				}
				return len(a)
			}
			// Rebalances progress in Poll, so polling is the wait.
			pollUntil := func(what string, done func() bool, cs ...*kafka.Consumer) {
				t.Helper()
				start := time.Now()
				for !done() {
					if ctx.Err() != nil {
						t.Fatalf("waiting for %s: %v", what, ctx.Err())
					}
					for _, cons := range cs {
						cons.Poll(10)
					}
				}
				t.Logf("%s after %v", what, time.Since(start))
			}

			c1 := newConsumer(t, c.Addr(), "g", tc.extra...)
			if err := c1.SubscribeTopics([]string{"e"}, nil); err != nil {
				t.Fatal(err)
			}
			pollUntil("first member owns 4", func() bool { return assigned(c1) == 4 }, c1)

			c2 := newConsumer(t, c.Addr(), "g", tc.extra...)
			if err := c2.SubscribeTopics([]string{"e"}, nil); err != nil {
				t.Fatal(err)
			}
			pollUntil("2+2 split", func() bool { return assigned(c1) == 2 && assigned(c2) == 2 }, c1, c2)

			if err := c2.Close(); err != nil {
				t.Fatal(err)
			}
			pollUntil("first member owns 4 again", func() bool { return assigned(c1) == 4 }, c1)
		})
	}
}

// TestTransactions checks librdkafka's transactional producer against kfake:
// a read_committed consumer sees committed records only.
func TestTransactions(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	c := kafkatest.StartT(t, kafkatest.Topic("tx", 2))
	p := newProducer(t, c.Addr(), "transactional.id", "tx-1")
	if err := p.InitTransactions(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	committed := produce(ctx, t, p, "tx", "committed", 100)
	if err := p.CommitTransaction(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(ctx, t, p, "tx", "aborted", 10)
	if err := p.AbortTransaction(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	more := produce(ctx, t, p, "tx", "more", 10)
	if err := p.CommitTransaction(ctx); err != nil {
		t.Fatal(err)
	}
	for v := range more {
		committed[v] = true
	}

	cons := newConsumer(t, c.Addr(), "txg", "isolation.level", "read_committed")
	if err := cons.SubscribeTopics([]string{"tx"}, nil); err != nil {
		t.Fatal(err)
	}
	// consume fails on any value outside committed, so aborted records
	// showing up fail the test.
	consume(ctx, t, cons, committed)
}

// TestStaticRejoinNoRebalance restarts each member of a three-member static
// cooperative-sticky group in turn, as a rolling deploy does: each restarted
// member gets exactly its partitions back and the other members neither join
// again nor change their assignment, as with Kafka's KIP-345 coordinator.
// The group forms in two steps so that every member's last join carries owned
// partitions, which kfake alone treats as changed metadata (static.go).
func TestStaticRejoinNoRebalance(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	c := kafkatest.StartT(t, kafkatest.Topic("s", 8))
	var mu sync.Mutex
	joins := map[string]int{} // JoinGroup requests per instance id
	c.Kfake().ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if jr := req.(*kmsg.JoinGroupRequest); jr.InstanceID != nil {
			mu.Lock()
			joins[*jr.InstanceID]++
			mu.Unlock()
		}
		return nil, nil, false
	})
	joinsOf := func(id string) int {
		mu.Lock()
		defer mu.Unlock()
		return joins[id]
	}
	start := func(id string) *kafka.Consumer {
		cons := newConsumer(t, c.Addr(), "static", "group.instance.id", id,
			"partition.assignment.strategy", "cooperative-sticky", "heartbeat.interval.ms", "100")
		if err := cons.SubscribeTopics([]string{"s"}, nil); err != nil {
			t.Fatal(err)
		}
		return cons
	}
	parts := func(cons *kafka.Consumer) string {
		a, err := cons.Assignment()
		if err != nil {
			t.Fatal(err)
		}
		ps := make([]int, len(a))
		for i, p := range a {
			ps[i] = int(p.Partition)
		}
		sort.Ints(ps)
		return fmt.Sprint(ps)
	}
	// Rebalances progress in Poll, so polling is the wait.
	pollUntil := func(what string, done func() bool, cs []*kafka.Consumer) {
		t.Helper()
		for !done() {
			if ctx.Err() != nil {
				t.Fatalf("waiting for %s: %v", what, ctx.Err())
			}
			for _, cons := range cs {
				cons.Poll(10)
			}
		}
	}
	total := func(cs []*kafka.Consumer) (n int) {
		for _, cons := range cs {
			a, _ := cons.Assignment()
			n += len(a)
		}
		return n
	}
	ids := []string{"m-0", "m-1", "m-2"}
	cs := []*kafka.Consumer{start(ids[0]), start(ids[1])}
	pollUntil("two members own 8", func() bool { return total(cs) == 8 && parts(cs[0]) != "[]" && parts(cs[1]) != "[]" }, cs)
	cs = append(cs, start(ids[2]))
	pollUntil("three members own 8", func() bool {
		return total(cs) == 8 && parts(cs[0]) != "[]" && parts(cs[1]) != "[]" && parts(cs[2]) != "[]"
	}, cs)

	for round := range 2 {
		for i, id := range ids {
			before := make([]string, len(cs))
			for k, cons := range cs {
				before[k] = parts(cons)
			}
			others := map[string]int{}
			for _, o := range ids {
				others[o] = joinsOf(o)
			}
			if err := cs[i].Close(); err != nil { // a static member: no LeaveGroup
				t.Fatal(err)
			}
			cs[i] = start(id)
			pollUntil(id+" holds its partitions again", func() bool { return parts(cs[i]) == before[i] }, cs)
			for k, o := range ids {
				if k == i {
					continue
				}
				if n := joinsOf(o) - others[o]; n != 0 || parts(cs[k]) != before[k] {
					t.Fatalf("round %d, restarting %s: %s joined %d times, partitions %s -> %s (a rebalance)", round, id, o, n, before[k], parts(cs[k]))
				}
			}
			t.Logf("round %d: %s restarted, %v", round, id, before)
		}
	}
}
