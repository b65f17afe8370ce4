package kafkatest_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
)

// Attack tests of the embedded broker's static-rejoin rewrite (static.go): whatever a static
// member does on restart, the group must converge to every partition owned by exactly one
// live member that subscribes to its topic, with no member stuck.

// member is one live consumer of the attacked group.
type member struct {
	id     string
	topics []string
	c      *kafka.Consumer
	fatal  error // a fatal error the consumer reported (fenced)
}

type staticGroup struct {
	t        *testing.T
	ctx      context.Context
	addr     string
	strategy string
	session  string
	parts    map[string]int // partitions per topic
}

func (g *staticGroup) start(id string, topics ...string) *member {
	g.t.Helper()
	c := newConsumer(g.t, g.addr, "attack", "group.instance.id", id,
		"partition.assignment.strategy", g.strategy, "heartbeat.interval.ms", "100",
		"session.timeout.ms", g.session)
	if err := c.SubscribeTopics(topics, nil); err != nil {
		g.t.Fatal(err)
	}
	return &member{id: id, topics: topics, c: c}
}

// startUnclosed is start for a consumer that will be fenced: it is not closed at cleanup,
// since librdkafka's Close of a fenced consumer never returns (it polls for
// rd_kafka_consumer_closed, which stays false; with or without static.go). Its librdkafka
// handle is left to the process's end; it starts no goroutine.
func (g *staticGroup) startUnclosed(id string, topics ...string) *member {
	g.t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers": g.addr, "group.id": "attack", "auto.offset.reset": "earliest",
		"enable.auto.commit": false, "enable.auto.offset.store": false,
		"group.instance.id": id, "partition.assignment.strategy": g.strategy,
		"heartbeat.interval.ms": 100, "session.timeout.ms": g.session, "log_level": 0,
	})
	if err != nil {
		g.t.Fatal(err)
	}
	if err := c.SubscribeTopics(topics, nil); err != nil {
		g.t.Fatal(err)
	}
	return &member{id: id, topics: topics, c: c}
}

// poll polls every member once, recording fatal errors.
func (g *staticGroup) poll(ms []*member) {
	for _, m := range ms {
		if m.c.IsClosed() {
			continue
		}
		if e, ok := m.c.Poll(10).(kafka.Error); ok && e.IsFatal() && m.fatal == nil {
			m.fatal = e
		}
	}
}

// owners describes who owns what, and reports whether every partition of g's topics is
// owned by exactly one of live, each within its subscription.
func (g *staticGroup) owners(live []*member) (string, bool) {
	own := map[string][]string{}
	good := true
	for _, m := range live {
		a, err := m.c.Assignment()
		if err != nil {
			return err.Error(), false
		}
		for _, p := range a {
			k := fmt.Sprintf("%s/%d", *p.Topic, p.Partition)
			own[k] = append(own[k], m.id)
			if !slices.Contains(m.topics, *p.Topic) {
				good = false
			}
		}
	}
	var desc []string
	for topic, n := range g.parts {
		for p := range n {
			k := fmt.Sprintf("%s/%d", topic, p)
			if len(own[k]) != 1 {
				good = false
			}
			desc = append(desc, fmt.Sprintf("%s:%v", k, own[k]))
		}
	}
	sort.Strings(desc)
	return strings.Join(desc, " "), good
}

// converge polls every member until the live ones own every partition once and keep doing
// so for a while (a rebalance in progress would change it), failing after the deadline.
func (g *staticGroup) converge(what string, all, live []*member) {
	g.t.Helper()
	var since time.Time
	for {
		g.poll(all)
		desc, ok := g.owners(live)
		switch {
		case !ok:
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) > 2*time.Second:
			g.t.Logf("%s: %s", what, desc)
			return
		}
		if g.ctx.Err() != nil {
			g.t.Fatalf("%s: no convergence: %s", what, desc)
		}
	}
}

func staticGroupT(t *testing.T, strategy string, topics map[string]int) *staticGroup {
	var opts []kafkatest.Option
	for name, n := range topics {
		opts = append(opts, kafkatest.Topic(name, n))
	}
	c := kafkatest.StartT(t, opts...)
	return &staticGroup{t: t, ctx: testCtx(t, 50*time.Second), addr: c.Addr(), strategy: strategy, session: "6000", parts: topics}
}

var strategies = []string{"range", "cooperative-sticky"}

// A static member restarts, within its session timeout, subscribed to other topics: it must
// end up owning partitions of its new topics only, its old ones going to the member that
// still subscribes to them.
func TestAttackStaticRestartChangesSubscription(t *testing.T) {
	for _, st := range strategies {
		t.Run(st, func(t *testing.T) {
			g := staticGroupT(t, st, map[string]int{"a": 4, "b": 4})
			m0, m1 := g.start("m-0", "a"), g.start("m-1", "a", "b")
			all := []*member{m0, m1}
			g.converge("formed", all, all)
			if err := m0.c.Close(); err != nil {
				t.Fatal(err)
			}
			m0 = g.start("m-0", "b")
			all = []*member{m0, m1}
			g.converge("m-0 restarted on b", all, all)
		})
	}
}

// A static member restarts after its session timeout removed it (its last join metadata,
// which the broker remembers, claims partitions the others own since): the group converges.
func TestAttackStaticRestartAfterSessionExpiry(t *testing.T) {
	for _, st := range strategies {
		t.Run(st, func(t *testing.T) {
			g := staticGroupT(t, st, map[string]int{"s": 6})
			ms := []*member{g.start("m-0", "s"), g.start("m-1", "s")}
			g.converge("two", ms, ms)
			ms = append(ms, g.start("m-2", "s"))
			g.converge("three", ms, ms)
			if err := ms[1].c.Close(); err != nil {
				t.Fatal(err)
			}
			rest := []*member{ms[0], ms[2]}
			g.converge("m-1 expired", rest, rest) // the session timeout (6 s) removed m-1
			ms[1] = g.start("m-1", "s")
			g.converge("m-1 back", ms, ms)
		})
	}
}

// A static member restarts while another member joins (the group rebalancing): the group
// converges over all three.
func TestAttackStaticRestartDuringRebalance(t *testing.T) {
	for _, st := range strategies {
		t.Run(st, func(t *testing.T) {
			g := staticGroupT(t, st, map[string]int{"s": 6})
			ms := []*member{g.start("m-0", "s"), g.start("m-1", "s")}
			g.converge("two", ms, ms)
			ms = append(ms, g.start("m-2", "s"))
			g.poll(ms) // m-2's join is under way
			if err := ms[0].c.Close(); err != nil {
				t.Fatal(err)
			}
			ms[0] = g.start("m-0", "s")
			g.converge("m-0 restarted while m-2 joined", ms, ms)
		})
	}
}

// Two live consumers with one instance id: the broker fences the older one (a fatal error),
// and the newer one and the other member own every partition.
func TestAttackStaticDuplicateInstanceFenced(t *testing.T) {
	for _, st := range strategies {
		t.Run(st, func(t *testing.T) {
			g := staticGroupT(t, st, map[string]int{"s": 6})
			ms := []*member{g.startUnclosed("m-0", "s"), g.start("m-1", "s")}
			g.converge("two", ms, ms)
			twin := g.start("m-0", "s")
			all := []*member{ms[0], ms[1], twin}
			for ms[0].fatal == nil {
				if g.ctx.Err() != nil {
					t.Fatal("the older m-0 was never fenced")
				}
				g.poll(all)
			}
			t.Logf("older m-0: %v", ms[0].fatal)
			if twin.fatal != nil || ms[1].fatal != nil {
				t.Fatalf("fatal errors on live members: twin %v, m-1 %v", twin.fatal, ms[1].fatal)
			}
			g.converge("twin replaced m-0", all, []*member{twin, ms[1]})
			// The fenced consumer's session times out (6 s) while it is still polled: it
			// must not rejoin and fence the twin in turn.
			for end := time.Now().Add(8 * time.Second); time.Now().Before(end); {
				g.poll(all)
			}
			if twin.fatal != nil || ms[1].fatal != nil {
				t.Fatalf("fatal errors on live members after the fenced one's session timeout: twin %v, m-1 %v", twin.fatal, ms[1].fatal)
			}
			g.converge("after the fenced one's session timeout", all, []*member{twin, ms[1]})
		})
	}
}
