package kafkatest_test

import (
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
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
