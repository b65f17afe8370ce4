package kafka_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestFaultSlowSinkWithinBudget (fault scenario 16): with the sink blocked (room on its input
// for every record, so only the budget holds the source back) and the topic holding over twenty
// budgets, the source pauses its partitions and the live heap, measured after GC with the broker
// in its own process, stays within the formula's bound for the budget (kafka.Memory.GoHeap);
// once released, everything completes and is committed.
func TestFaultSlowSinkWithinBudget(t *testing.T) {
	const n, parts, budget = 2200, 2, 4 << 20
	addr := brokerProcess(t, "in", parts)
	size := func(i int) int { return 16<<10 + (i*7919)%(48<<10) }
	var total int
	for i := range n {
		total += size(i)
	}
	if total <= 20*budget {
		t.Fatalf("topic holds %d bytes, want over %d", total, 20*budget)
	}
	produceEach(t, addr, "in", n, func(i int) ([]byte, []byte, []ckafka.Header) {
		v := make([]byte, size(i))
		copy(v, fmt.Sprintf("v-%d-", i))
		return []byte(fmt.Sprintf("k-%d", i)), v, nil
	})
	cfg := sourceConfig(addr, "g-bp", "in")
	cfg.Budget, cfg.MaxMessageBytes = budget, 256<<10
	src := newSource(t, cfg)
	release := make(chan struct{})
	open := sync.OnceFunc(func() { close(release) })
	got := newTally(1, n) // by record number, parsed from the value; its length is checked
	m := runMeasured(t, src, parts, func(b *pipeline.Builder) {
		pipeline.To(b.Source(), stage.Sink("blocked", func(_ context.Context, ev *stage.Event) error {
			<-release
			var i int
			if _, err := fmt.Sscanf(string(ev.Value[:min(len(ev.Value), 16)]), "v-%d-", &i); err != nil {
				i = -1
			}
			got.add(0, int64(i), i >= 0 && len(ev.Value) == size(i))
			return nil
		}, stage.WithCapacity(n)))
	})
	t.Cleanup(open) // after a failure too: the pipeline stops only once the sink returns
	m.blockedHeap(t, parts, n)
	if s := m.p.Stats(); s.BudgetBytes != src.Memory().InFlight || s.Completed > 0 {
		t.Fatalf("blocked: %+v; planned in flight %d", s, src.Memory().InFlight)
	}
	open()
	kafkatest.WaitFor(t, 120*time.Second, "every record", func() bool { return m.p.Stats().Completed >= n })
	requireCommittedAtEnd(t, addr, "g-bp", "in", parts)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if src.Stats().Pauses == 0 {
		t.Fatal("no pause recorded")
	}
	got.requireAll(t, n)
}

// TestFaultProducerQueueFullStorm: a tiny producer queue makes Produce meet ErrQueueFull;
// the sink waits instead of dropping.
func TestFaultProducerQueueFullStorm(t *testing.T) {
	const n, parts = 1000, 4
	cl := startCluster(t, kafkatest.Topic("in", parts), kafkatest.Topic("out", parts))
	want := produceN(t, cl.Addr(), "in", "v", n, 50)
	src := newSource(t, sourceConfig(cl.Addr(), "g-qf", "in"))
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out", Overrides: map[string]any{"queue.buffering.max.messages": 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	r := start(t, src, pipeToProducer(prod, 4))
	kafkatest.WaitFor(t, 60*time.Second, "every record", func() bool { return r.p.Stats().Completed >= n })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	requireSet(t, want, readAll(t, cl.Addr(), "out", n, 30*time.Second))
	if st := prod.Stats(); st.QueueFull == 0 || st.Outstanding != 0 || st.DeliveryErrors != 0 {
		t.Fatalf("producer stats %+v: want QueueFull > 0, nothing outstanding", st)
	}
}

func pipeToProducer(prod *kafka.Producer, conc int) func(b *pipeline.Builder) {
	return func(b *pipeline.Builder) {
		recs := pipeline.Then(b.Source(), stage.Map("to-record", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
			return kafka.Record{Key: append([]byte(nil), ev.Key...), Value: append([]byte(nil), ev.Value...)}, nil
		}, stage.WithConcurrency(conc)))
		pipeline.To(recs, prod.Sink("produce", stage.WithConcurrency(conc)))
	}
}

// TestConnectionsDoNotGrowWithConcurrency: the pipeline's stage concurrency does not open
// connections: one consumer and one producer serve any concurrency.
func TestConnectionsDoNotGrowWithConcurrency(t *testing.T) {
	const n, parts = 300, 4
	cl := startCluster(t, kafkatest.Topic("in", parts), kafkatest.Topic("out", parts))
	produceN(t, cl.Addr(), "in", "v", n, 50)
	ports := map[int]bool{}
	for _, a := range strings.Split(cl.Addr(), ",") {
		p, err := strconv.Atoi(a[strings.LastIndex(a, ":")+1:])
		if err != nil {
			t.Fatal(err)
		}
		ports[p] = true
	}
	measure := func(conc int) (tcp, stats int) {
		cfg := sourceConfig(cl.Addr(), fmt.Sprintf("g-conn-%d", conc), "in")
		cfg.StatsInterval = 200 * time.Millisecond
		src := newSource(t, cfg)
		prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close(context.Background())
		r := start(t, src, pipeToProducer(prod, conc))
		kafkatest.WaitFor(t, 60*time.Second, "every record", func() bool { return r.p.Stats().Completed >= n })
		kafkatest.WaitFor(t, 10*time.Second, "librdkafka statistics", func() bool { return src.Stats().Connections > 0 })
		for range 5 {
			tcp = max(tcp, brokerConnections(t, ports))
			time.Sleep(50 * time.Millisecond)
		}
		stats = src.Stats().Connections
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		return tcp, stats
	}
	tcp1, st1 := measure(1)
	tcp64, st64 := measure(64)
	t.Logf("established connections to the broker: concurrency 1: %d (stats %d), concurrency 64: %d (stats %d)", tcp1, st1, tcp64, st64)
	if tcp1 == 0 || st1 == 0 || st64 == 0 {
		t.Fatal("no connection counted")
	}
	if tcp64 > tcp1 {
		t.Fatalf("connections grew with concurrency: %d at 1, %d at 64", tcp1, tcp64)
	}
}

// brokerConnections counts established TCP connections (state 01) to the broker ports, from
// /proc/net/tcp and /proc/net/tcp6 (addresses are hex "IP:PORT").
func brokerConnections(t testing.TB, ports map[int]bool) int {
	t.Helper()
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			if f == "/proc/net/tcp6" {
				continue
			}
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "01" {
				continue
			}
			rem := fields[2]
			port, err := strconv.ParseInt(rem[strings.LastIndex(rem, ":")+1:], 16, 32)
			if err == nil && ports[int(port)] {
				n++
			}
		}
		fh.Close()
	}
	return n
}
