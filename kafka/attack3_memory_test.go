package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Attack round 3, memory: the README's formula (Memory.GoHeap) checked, as an outside user
// would, for record shapes and configurations the memory tests did not list. Each probe
// blocks the sink (room on its input for every record), waits until the source has nothing
// more to do, and compares the live heap after GC (broker in its own process) with the
// baseline + GoHeap(partitions).

// heapProbe is one memory probe: parts partitions holding n records made by rec, consumed with
// cfg's changes through wire (which must end in a sink that waits for release).
type heapProbe struct {
	parts, n int
	rec      func(i int) (key, value []byte, headers []ckafka.Header)
	cfg      func(c *kafka.Config)
	opts     []pipeline.Option
	wire     func(b *pipeline.Builder, release <-chan struct{}, done func(ev *stage.Event))
}

// run produces the records, runs the pipeline with the sink blocked, fails if the live heap
// passes baseline + GoHeap(parts) (blockedHeap), then releases the sink and requires every
// record to complete exactly once.
func (hp heapProbe) run(t *testing.T, group string) {
	t.Helper()
	addr := brokerProcess(t, "in", hp.parts)
	produceEach(t, addr, "in", hp.n, hp.rec)
	cfg := sourceConfig(addr, group, "in")
	if hp.cfg != nil {
		hp.cfg(&cfg)
	}
	src := newSource(t, cfg)
	release := make(chan struct{})
	open := sync.OnceFunc(func() { close(release) })
	got := newTally(hp.parts, hp.n)
	b := pipeline.New(src, append(append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger())), hp.opts...)...)
	hp.wire(b, release, func(ev *stage.Event) { got.add(ev.Partition, ev.Offset, true) })
	p, err := b.Build()
	if err != nil {
		_ = src.Close(context.Background())
		t.Fatal(err)
	}
	m := &measured{base: liveHeap()}
	m.bound = m.base + src.Memory().GoHeap(hp.parts)
	m.heap = sampleHeap(20 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	m.running = &running{p: p, src: src, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- p.Run(ctx) }()
	t.Cleanup(func() { _ = m.stop(); m.heap.stop() })
	t.Cleanup(open)
	mem := src.Memory()
	t.Logf("plan: InFlight %d, HeldMax %d, PerPartition %d; GoHeap(%d) = %d B", mem.InFlight, mem.HeldMax, mem.PerPartition, hp.parts, mem.GoHeap(hp.parts))
	m.blockedHeap(t, hp.parts, hp.n)
	open()
	kafkatest.WaitFor(t, 120*time.Second, "every record", func() bool { return m.p.Stats().Completed >= uint64(hp.n) })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	got.requireAll(t, hp.n)
}

// blockedSink is a sink with room for every record and conc workers that wait for release.
func blockedSink(n, conc int) func(b *pipeline.Builder, release <-chan struct{}, done func(ev *stage.Event)) {
	return func(b *pipeline.Builder, release <-chan struct{}, done func(ev *stage.Event)) {
		pipeline.To(b.Source(), stage.Sink("blocked", func(_ context.Context, ev *stage.Event) error {
			<-release
			done(ev)
			return nil
		}, stage.WithCapacity(n), stage.WithConcurrency(conc)))
	}
}

// TestFaultAttack3ManySmallHeaders: records of 50 headers (10-byte names and values) and an
// 8-byte value, a blocked sink with 16 workers: the per-header overhead EventSize counts covers
// what a header costs on the heap (name, value, its entries in the message's and the event's
// header slices), so the live heap stays within Memory.GoHeap (measured +9.0 MiB against 13.0 MiB
// with 1,774 events in flight); once released, every record completes.
func TestFaultAttack3ManySmallHeaders(t *testing.T) {
	const parts, n = 1, 6000
	hp := heapProbe{parts: parts, n: n,
		rec: func(i int) ([]byte, []byte, []ckafka.Header) {
			hs := make([]ckafka.Header, 50)
			for j := range hs {
				hs[j] = ckafka.Header{Key: fmt.Sprintf("hdr-%06d", j), Value: []byte(fmt.Sprintf("val-%06d", i%1000000))}
			}
			return []byte(fmt.Sprintf("k-%06d", i)), []byte("12345678"), hs
		},
		cfg:  func(c *kafka.Config) { c.MaxMessageBytes = 64 << 10 },
		wire: blockedSink(n, 16),
	}
	hp.run(t, "g-a3-hdr")
}

// TestFaultAttack3LongKeysWithinFormula: under OrderKey, records with distinct 8 KiB keys and
// empty values, a blocked sink. EventSize counts each key once, but the source's key table
// (gate.keys, kafka/gate.go admit: g.keys[string(key)]++) holds a copy of every in-flight key, so
// each event costs two keys on the heap: measured +16.6 MiB with 963 events in flight against
// GoHeap(2) = 13.1 MiB (OrderNone, same records: +8.2 MiB). The formula's 64 B per key-table
// entry assumes the key's bytes are counted in flight, which holds only for short keys.
func TestFaultAttack3LongKeysWithinFormula(t *testing.T) {
	const parts, n = 2, 3000
	hp := heapProbe{parts: parts, n: n,
		rec: func(i int) ([]byte, []byte, []ckafka.Header) {
			k := make([]byte, 8<<10)
			copy(k, fmt.Sprintf("key-%08d", i))
			return k, []byte{}, nil
		},
		cfg:  func(c *kafka.Config) { c.MaxMessageBytes = 16 << 10 },
		wire: blockedSink(n, 16),
	}
	hp.run(t, "g-a3-keys")
}
