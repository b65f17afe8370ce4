package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// A Batch without Linger must make progress when the source cannot admit enough events to fill
// it: fewer keys (OrderKey) or partitions (OrderPartition) than MaxCount, or records larger
// than MaxMessageBytes filling the budget first. Before the stall signal each of these waited
// forever (0 of 200 records after 30 s): the source held the rest, the batch waited for them.

// batchSink collects the records of every batch and the batches' sizes.
type batchSink struct {
	got   seen
	mu    sync.Mutex
	sizes []int
}

func (b *batchSink) wire(bc stage.BatchConfig[*stage.Event]) func(*pipeline.Builder) {
	return func(pb *pipeline.Builder) {
		batches := pipeline.Then(pb.Source(), stage.Batch("batch", bc))
		pipeline.To(batches, stage.Sink("sink", func(_ context.Context, evs []*stage.Event) error {
			for _, ev := range evs {
				b.got.add(ev)
			}
			b.mu.Lock()
			b.sizes = append(b.sizes, len(evs))
			b.mu.Unlock()
			return nil
		}))
	}
}

func (b *batchSink) maxSize() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := 0
	for _, s := range b.sizes {
		m = max(m, s)
	}
	return m
}

// runBatchProgress runs cfg's source into a MaxCount-64 batch without Linger. While it runs,
// the source must emit every record and all but the last partial batch (at most tail records:
// the source admits no more at once) must complete, within a bounded wait; that partial batch
// waits for more input, as a batch without Linger does, until the stop closes the stream and
// flushes it. Then every record of want was processed and the commits reach the end.
func runBatchProgress(t *testing.T, cl *kafkatest.Cluster, cfg kafka.Config, partitions, tail int, want map[string]bool) {
	t.Helper()
	var bs batchSink
	r := start(t, newSource(t, cfg), bs.wire(stage.BatchConfig[*stage.Event]{MaxCount: 64}))
	n := uint64(len(want))
	kafkatest.WaitFor(t, 30*time.Second, fmt.Sprintf("all %d records emitted and %d completed through a MaxCount-64 batch without Linger", n, n-uint64(tail)), func() bool {
		st := r.p.Stats()
		return st.Emitted == n && st.Completed >= n-uint64(tail)
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	requireSet(t, want, values(bs.got.all()))
	requireCommittedAtEnd(t, cl.Addr(), cfg.GroupID, cfg.Topics[0], partitions)
	if m := bs.maxSize(); m > tail {
		t.Fatalf("a batch of %d records; the source admits at most %d at once", m, tail)
	}
}

// TestFaultBatchKeyOrderingProgress: OrderKey admits one event per key; with 10 keys in one
// partition the batch never reaches 64 by itself.
func TestFaultBatchKeyOrderingProgress(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 1))
	want := produceN(t, cl.Addr(), "in", "v", 200, 10)
	cfg := sourceConfig(cl.Addr(), "g-batch-key", "in")
	cfg.MaxMessageBytes = 64 << 10 // 64 × 64 KiB fits the 8 MiB in flight: Build accepts the batch
	runBatchProgress(t, cl, cfg, 1, 10, want)
}

// TestFaultBatchPartitionOrderingProgress: OrderPartition admits one event per partition; two
// partitions never fill a batch of 64.
func TestFaultBatchPartitionOrderingProgress(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 2))
	want := produceN(t, cl.Addr(), "in", "v", 200, 20)
	for p, hw := range highWatermarks(t, cl.Addr(), "in", 2) {
		if hw == 0 {
			t.Fatalf("partition %d got no records: the test needs both", p)
		}
	}
	cfg := sourceConfig(cl.Addr(), "g-batch-part", "in")
	cfg.MaxMessageBytes = 64 << 10
	cfg.Ordering = kafka.OrderPartition
	runBatchProgress(t, cl, cfg, 2, 2, want)
}

// TestFaultBatchBudgetProgress: Build accepts MaxCount 64 because 64 × MaxMessageBytes (8 KiB)
// fits the 512 KiB in flight, but the records are 16 KiB (MaxMessageBytes is an estimate;
// librdkafka returns larger records): 32 of them exhaust the budget, and the source pauses
// while the batch waits for more.
func TestFaultBatchBudgetProgress(t *testing.T) {
	const n, size = 100, 16 << 10
	cl := startCluster(t, kafkatest.Topic("in", 1))
	keys, vals := make([][]byte, n), make([][]byte, n)
	want := map[string]bool{}
	for i := range vals {
		vals[i] = fmt.Appendf(nil, "v-%d-", i)
		vals[i] = append(vals[i], bytes.Repeat([]byte{'x'}, size-len(vals[i]))...)
		want[string(vals[i])] = true
	}
	produceValues(t, cl.Addr(), "in", keys, vals)
	cfg := sourceConfig(cl.Addr(), "g-batch-budget", "in")
	cfg.Budget, cfg.MaxMessageBytes, cfg.Ordering = 1<<20, 8<<10, kafka.OrderNone
	runBatchProgress(t, cl, cfg, 1, (512<<10)/size, want)
}
