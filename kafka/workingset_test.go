package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestWorkingSetFollowsSlowSink: with the default configuration (no budget given: 32 MiB in
// flight) and a sink slower than the input (2 workers of 10 ms calls, 100 KiB records), the
// pipeline keeps in flight what the sink needs, not what the budget and the edges allow: the
// live heap (after GC; the broker in its own process) grows by at most 5 MiB while 400 records
// flow (the window starts at 2 MiB; measured 2.7-3.0 MiB). Without the in-flight window the
// sink's edge holds 64 records and its workers 2 (measured 7.6 MiB). Both workers stay busy
// (the window grew as far as they needed), every record completes, and the commits reach the
// end.
func TestWorkingSetFollowsSlowSink(t *testing.T) {
	const n, parts, size, workers = 400, 4, 100 << 10, 2
	const maxGrowth = 5 << 20
	addr := brokerProcess(t, "in", parts)
	val := make([]byte, size)
	produceEach(t, addr, "in", n, func(i int) ([]byte, []byte, []ckafka.Header) {
		return []byte(fmt.Sprintf("k-%d", i)), val, nil // keyed: every partition gets records (and a commit)
	})
	val = nil

	cfg := sourceConfig(addr, "g-ws", "in")
	cfg.Budget = 0 // none given: the default
	src := newSource(t, cfg)
	if m := src.Memory(); m.Budget != kafka.DefaultBudget {
		t.Fatalf("budget %d, want the default %d", m.Budget, kafka.DefaultBudget)
	}
	got := newTally(parts, n)
	var calls maxTracker
	b := pipeline.New(src, pipeline.WithLogger(kafkatest.Logger()))
	pipeline.To(b.Source(), stage.Sink("slow", func(_ context.Context, ev *stage.Event) error {
		calls.enter()
		defer calls.leave()
		time.Sleep(10 * time.Millisecond) // the slow downstream's time per call (not a synchronisation)
		got.add(ev.Partition, ev.Offset, len(ev.Value) == size && len(ev.Key) > 0)
		return nil
	}, stage.WithConcurrency(workers), stage.WithUnordered()))
	p, err := b.Build()
	if err != nil {
		_ = src.Close(context.Background())
		t.Fatal(err)
	}
	base := liveHeap()
	heap := sampleHeap(20 * time.Millisecond)
	defer heap.stop()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	kafkatest.WaitFor(t, 60*time.Second, "every record", func() bool { return p.Stats().Completed >= n })
	heap.stop()
	peak, samples := heap.peak()
	st := p.Stats()
	t.Logf("live heap: baseline %d B, peak %d B (+%d B) over %d samples; pipeline window %d B of %d B, high water %d B; %d of %d calls at once",
		base, peak, peak-base, samples, st.WindowBytes, st.BudgetBytes, st.HighWaterBytes, calls.peak(), workers)
	if peak-base > maxGrowth {
		t.Errorf("the live heap grew by %d B while a slow sink drained %d records of %d B: want at most %d B", peak-base, n, size, maxGrowth)
	}
	if calls.peak() != workers {
		t.Errorf("at most %d of the sink's %d calls ran at once: the window starved it", calls.peak(), workers)
	}
	cancel() // drain and commit on close
	stopped = true
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	requireCommittedAtEnd(t, addr, "g-ws", "in", parts)
	got.requireAll(t, n)
}
