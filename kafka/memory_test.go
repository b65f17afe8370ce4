package kafka_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Memory tests measure the consumer's memory with a meter the code under test does not own:
// the live Go heap after runtime.GC(). The broker runs in its own process (it keeps every
// record on its heap), so the test process's heap holds only the consumer side, and the test
// itself keeps no payloads (sinks record digests). The bound is the formula of kafka.Memory
// (README "Memory formula"): Memory.GoHeap(partitions) over a baseline measured after Build,
// before Run.

// brokerProcess starts the embedded broker in a child process with topic of parts partitions
// and stops it at the end of the test.
func brokerProcess(t testing.TB, topic string, parts int) string {
	t.Helper()
	p, err := kafkatest.StartProcess(context.Background(), "--topic", fmt.Sprintf("%s:%d", topic, parts))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p.Addr()
}

// produceEach writes n records made by rec to topic with an idempotent producer and waits for
// every delivery; the records are made one at a time, so the test keeps none of them.
func produceEach(t testing.TB, addr, topic string, n int, rec func(i int) (key, value []byte, headers []ckafka.Header)) {
	t.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": addr, "enable.idempotence": true, "acks": "all", "linger.ms": 5, "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	reports := make(chan ckafka.Event, n)
	for i := range n {
		k, v, h := rec(i)
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny}, Key: k, Value: v, Headers: h}
		for {
			err := p.Produce(m, reports)
			if err == nil {
				break
			}
			if ke, ok := err.(ckafka.Error); !ok || ke.Code() != ckafka.ErrQueueFull {
				t.Fatal(err)
			}
			p.Flush(10)
		}
	}
	for range n {
		if m := (<-reports).(*ckafka.Message); m.TopicPartition.Error != nil {
			t.Fatal(m.TopicPartition.Error)
		}
	}
}

// liveHeap collects garbage and returns the live heap it marked. While messages flow, that
// includes what was allocated during the collection (the collector keeps it), so the tests
// read it only once the pipeline is blocked and the source has stopped reading.
func liveHeap() int64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// heapSampler measures the live heap every interval (a GC each time) until stop, keeping the
// highest sample and the count since the last reset.
type heapSampler struct {
	mu    sync.Mutex
	max   int64
	n     int
	quit  chan struct{}
	ended chan struct{}
}

func sampleHeap(every time.Duration) *heapSampler {
	h := &heapSampler{quit: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(h.ended)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			v := liveHeap()
			h.mu.Lock()
			h.max, h.n = max(h.max, v), h.n+1
			h.mu.Unlock()
			select {
			case <-tick.C:
			case <-h.quit:
				return
			}
		}
	}()
	return h
}

// peak returns the highest sample and the number of samples since the last reset.
func (h *heapSampler) peak() (int64, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max, h.n
}

func (h *heapSampler) reset() {
	h.mu.Lock()
	h.max, h.n = 0, 0
	h.mu.Unlock()
}

// stop ends the sampling; idempotent.
func (h *heapSampler) stop() {
	select {
	case <-h.quit:
	default:
		close(h.quit)
	}
	<-h.ended
}

// tally counts deliveries per partition and offset in memory allocated before the baseline,
// so recording them does not grow the measured heap.
type tally struct {
	seen [][]atomic.Int32 // [partition][offset]: deliveries
	ok   atomic.Int64     // deliveries whose check passed
	bad  atomic.Int64     // deliveries outside [0, n) per partition
}

func newTally(parts, n int) *tally {
	t := &tally{seen: make([][]atomic.Int32, parts)}
	for i := range t.seen {
		t.seen[i] = make([]atomic.Int32, n)
	}
	return t
}

// add counts a delivery of record (partition, offset); ok is whether its check passed.
func (t *tally) add(partition int32, offset int64, ok bool) {
	if partition < 0 || int(partition) >= len(t.seen) || offset < 0 || offset >= int64(len(t.seen[partition])) {
		t.bad.Add(1)
		return
	}
	t.seen[partition][offset].Add(1)
	if ok {
		t.ok.Add(1)
	}
}

// requireAll fails unless n distinct records were delivered, every delivery passing its check,
// with each partition's offsets (or record numbers) dense from 0.
func (t *tally) requireAll(tb testing.TB, n int) {
	tb.Helper()
	distinct, deliveries := 0, 0
	for p := range t.seen {
		gap := -1
		for off := range t.seen[p] {
			c := int(t.seen[p][off].Load())
			deliveries += c
			switch {
			case c == 0 && gap < 0:
				gap = off
			case c > 0 && gap >= 0:
				tb.Fatalf("partition %d: offset %d missing below delivered offset %d", p, gap, off)
			case c > 0:
				distinct++
			}
		}
	}
	if distinct != n || t.bad.Load() != 0 || t.ok.Load() != int64(deliveries) {
		tb.Fatalf("%d distinct records of %d (%d deliveries, %d out of range, %d passed the check)", distinct, n, deliveries, t.bad.Load(), t.ok.Load())
	}
}

// measured is a pipeline started by runMeasured, with the heap meter running.
type measured struct {
	*running
	base  int64 // live heap after Build, before Run
	bound int64 // base + the formula's Go heap for the source's partitions
	heap  *heapSampler
}

// runMeasured builds a pipeline on src as start does, measures the baseline heap, and runs the
// pipeline with the heap sampler. bound is the baseline plus Memory().GoHeap(partitions).
func runMeasured(t *testing.T, src *kafka.Source, partitions int, wire func(b *pipeline.Builder)) *measured {
	t.Helper()
	// No in-flight window (pipeline.WithInitialWindow(0)): these tests measure the worst case,
	// the whole in-flight budget taken, against the formula's bound.
	b := pipeline.New(src, append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()), pipeline.WithInitialWindow(0))...)
	wire(b)
	p, err := b.Build()
	if err != nil {
		_ = src.Close(context.Background())
		t.Fatal(err)
	}
	m := &measured{base: liveHeap()}
	m.bound = m.base + src.Memory().GoHeap(partitions)
	m.heap = sampleHeap(20 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	m.running = &running{p: p, src: src, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- p.Run(ctx) }()
	t.Cleanup(func() { _ = m.stop(); m.heap.stop() })
	return m
}

// blockedHeap waits until the source has nothing more to do with the sink blocked (every
// partition paused, or all n records emitted), then returns the highest of ten live-heap
// samples and stops the sampler. It fails if that peak is over the bound.
func (m *measured) blockedHeap(t *testing.T, partitions, n int) int64 {
	t.Helper()
	kafkatest.WaitFor(t, 60*time.Second, "every partition paused or every record emitted", func() bool {
		return m.src.Stats().Paused == int64(partitions) || m.p.Stats().Emitted == uint64(n)
	})
	m.heap.reset()
	kafkatest.WaitFor(t, 30*time.Second, "ten heap samples while blocked", func() bool {
		_, k := m.heap.peak()
		return k >= 10
	})
	m.heap.stop()
	peak, _ := m.heap.peak()
	st := m.p.Stats()
	t.Logf("live heap while blocked: baseline %d B, peak %d B (+%d B) with %d events, %d budget bytes in flight; bound %d B (baseline + GoHeap(%d) %d B)",
		m.base, peak, peak-m.base, st.InFlightEvents, st.InFlightBytes, m.bound, partitions, m.bound-m.base)
	if peak > m.bound {
		t.Fatalf("live heap %d B over the formula's bound %d B", peak, m.bound)
	}
	return peak
}

// TestFaultHeadersCountAgainstBudget: records with an empty value and a 64 KiB header fill
// the budget like any other bytes. With the sink blocked (room on its input for every record),
// the live heap stays within the formula's bound for a 4 MiB budget (before, the budget read
// 0 B and let all 2,000, 125 MiB of headers, into flight); once released, every record
// completes and the commits reach the end.
func TestFaultHeadersCountAgainstBudget(t *testing.T) {
	headerRecords(t, "g-hdr", kafka.OrderKey, 2000, 4<<20)
}

// TestFaultHeldMessagesCountAgainstBudget: messages the source holds back because their
// partition is busy (OrderPartition, the sink blocked) count with their headers, and the source
// pauses a partition once all of them hold half of Memory.Held: with a 32 MiB budget the live
// heap stays within the formula's bound, 23 MiB (before, held headers counted 0 B and each
// partition held 256 records, 16 MiB, before it paused); once released, every record completes
// and the commits reach the end. The drain is slow (~1 s per pause: librdkafka adds a resumed
// partition back to its fetch list at the broker thread's next wake-up), so it has few records.
func TestFaultHeldMessagesCountAgainstBudget(t *testing.T) {
	headerRecords(t, "g-held", kafka.OrderPartition, 600, 32<<20)
}

// headerRecords runs n records with an empty value and a 64 KiB header, in two partitions,
// through a sink that blocks until the live heap has been measured.
func headerRecords(t *testing.T, group string, ordering kafka.Ordering, n int, budget int64) {
	const parts, headerLen = 2, 64 << 10
	addr := brokerProcess(t, "in", parts)
	header := make([]byte, headerLen)
	produceEach(t, addr, "in", n, func(i int) ([]byte, []byte, []ckafka.Header) {
		return []byte(fmt.Sprintf("k-%d", i)), []byte{}, []ckafka.Header{{Key: "trace", Value: header}}
	})
	header = nil

	cfg := sourceConfig(addr, group, "in")
	cfg.Budget, cfg.MaxMessageBytes, cfg.Ordering = budget, 128<<10, ordering
	src := newSource(t, cfg)
	release := make(chan struct{})
	open := sync.OnceFunc(func() { close(release) })
	got := newTally(parts, n)
	m := runMeasured(t, src, parts, func(b *pipeline.Builder) {
		pipeline.To(b.Source(), stage.Sink("blocked", func(_ context.Context, ev *stage.Event) error {
			<-release
			whole := len(ev.Headers) == 1 && ev.Headers[0].Key == "trace" && len(ev.Headers[0].Value) == headerLen
			got.add(ev.Partition, ev.Offset, whole)
			return nil
		}, stage.WithCapacity(n)))
	})
	t.Cleanup(open) // after a failure too: the pipeline stops only once the sink returns
	m.blockedHeap(t, parts, n)
	open()
	kafkatest.WaitFor(t, 120*time.Second, "every record", func() bool { return m.p.Stats().Completed >= uint64(n) })
	requireCommittedAtEnd(t, addr, group, "in", parts)
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	got.requireAll(t, n)
}

// TestEventSizeCoversHeap: what the budget counts for an event in flight (pipeline.EventSize:
// key, value, headers, EventOverhead and HeaderOverhead) is at least what it holds on the heap.
// 8,000 records with a 7-byte key, an empty value and two small headers are all in flight at
// once (a blocked sink with room for all of them, under OrderKey); the live heap grows by no
// more than the budget's bytes in flight. Before, the budget counted 7 B for each.
func TestEventSizeCoversHeap(t *testing.T) {
	const n, parts = 8000, 8
	addr := brokerProcess(t, "in", parts)
	produceEach(t, addr, "in", n, func(i int) ([]byte, []byte, []ckafka.Header) {
		return []byte(fmt.Sprintf("k-%05d", i)), []byte{}, []ckafka.Header{{Key: "h0"}, {Key: "h1", Value: []byte{}}}
	})
	cfg := sourceConfig(addr, "g-size", "in")
	cfg.Budget = 16 << 20 // in flight 8 MiB: room for all of them
	src := newSource(t, cfg)
	release := make(chan struct{})
	open := sync.OnceFunc(func() { close(release) })
	got := newTally(parts, n)
	m := runMeasured(t, src, parts, func(b *pipeline.Builder) {
		pipeline.To(b.Source(), stage.Sink("blocked", func(_ context.Context, ev *stage.Event) error {
			<-release
			got.add(ev.Partition, ev.Offset, len(ev.Key) == 7 && len(ev.Headers) == 2)
			return nil
		}, stage.WithCapacity(n)))
	})
	t.Cleanup(open)
	peak := m.blockedHeap(t, parts, n)
	st := m.p.Stats()
	if st.Emitted != n {
		t.Fatalf("%d of %d records in flight", st.Emitted, n)
	}
	grown := peak - m.base
	t.Logf("%d events in flight: the heap grew by %d B (%d B per event), the budget counts %d B (%d B per event)",
		n, grown, grown/n, st.InFlightBytes, st.InFlightBytes/n)
	if grown > st.InFlightBytes {
		t.Fatalf("the heap grew by %d B with %d events in flight, more than the %d B the budget counts", grown, n, st.InFlightBytes)
	}
	open()
	kafkatest.WaitFor(t, 60*time.Second, "every record", func() bool { return m.p.Stats().Completed >= n })
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	got.requireAll(t, n)
}
