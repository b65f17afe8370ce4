package faulttest

import (
	"context"
	"os"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// seen records which values a sink received, and how often.
type seen struct {
	mu sync.Mutex
	m  map[string]int
}

func newSeen() *seen { return &seen{m: map[string]int{}} }

func (s *seen) add(v string) {
	s.mu.Lock()
	s.m[v]++
	s.mu.Unlock()
}

func (s *seen) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func (s *seen) dups() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := 0
	for _, n := range s.m {
		d += n - 1
	}
	return d
}

// missing returns the wanted values never seen.
func (s *seen) missing(want map[string]bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for v := range want {
		if s.m[v] == 0 {
			out = append(out, v)
		}
	}
	return out
}

// produce writes n records "prefix-i" (37 keys) to topic and waits for delivery.
func produce(t testing.TB, addr, topic, prefix string, n int) map[string]bool {
	t.Helper()
	want, err := kafkatest.ProduceN(addr, topic, prefix, n, 37)
	if err != nil {
		t.Fatal(err)
	}
	return want
}

// slowWork makes a stage take a little time per record, so a fault lands mid-stream.
func slowWork(context.Context, *stage.Event) error {
	time.Sleep(200 * time.Microsecond)
	return nil
}

// run is one consumer pipeline: source → work → sink recording values into s.
type run struct {
	src  *kafka.Source
	p    *pipeline.Pipeline
	done chan error
	stop context.CancelFunc
}

type runOpts struct {
	group   string
	topic   string
	work    func(ctx context.Context, ev *stage.Event) error // nil: none
	conc    int
	cfg     func(*kafka.Config)
	pipe    []pipeline.Option
	handler func(ctx context.Context, f *stage.Failure) error
	batch   int            // > 0: batch the events (this many, or 100 ms) before the sink
	sinkOpt []stage.Option // extra options of the sink stage (retries, error policy)
}

func start(t testing.TB, addr string, s *seen, o runOpts) *run {
	t.Helper()
	r, err := startRun(addr, s, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// startRun builds and starts the pipeline of start, returning construction errors.
func startRun(addr string, s *seen, o runOpts) (*run, error) {
	cfg := kafka.Config{Brokers: addr, GroupID: o.group, Topics: []string{o.topic}, Overrides: map[string]any{},
		CommitInterval: 100 * time.Millisecond, Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10}
	for k, v := range kafkatest.FastGroup() {
		cfg.Overrides[k] = v
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	src, err := kafka.NewSource(cfg)
	if err != nil {
		return nil, err
	}
	opts := append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()), pipeline.WithDrainTimeout(10*time.Second))
	if o.handler != nil {
		opts = append(opts, pipeline.WithErrorHandler(o.handler))
	}
	opts = append(opts, o.pipe...)
	b := pipeline.New(src, opts...)
	conc := max(o.conc, 1)
	work := o.work
	sinkOpts := append([]stage.Option{stage.WithConcurrency(conc)}, o.sinkOpt...)
	sink := func(ctx context.Context, ev *stage.Event) error {
		if work != nil {
			if err := work(ctx, ev); err != nil {
				return err
			}
		}
		s.add(string(ev.Value))
		return nil
	}
	if o.batch > 0 {
		// A batch holds its events until the sink returned: the events complete (and are
		// committed) only then.
		batches := pipeline.Then(b.Source(), stage.Batch("batch", stage.BatchConfig[*stage.Event]{MaxCount: o.batch, Linger: 100 * time.Millisecond}))
		pipeline.To(batches, stage.Sink("work", func(ctx context.Context, evs []*stage.Event) error {
			for _, ev := range evs {
				if err := sink(ctx, ev); err != nil {
					return err
				}
			}
			return nil
		}, sinkOpts...))
	} else {
		pipeline.To(b.Source(), stage.Sink("work", sink, sinkOpts...))
	}
	p, err := b.Build()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{src: src, p: p, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- p.Run(ctx) }()
	return r, nil
}

// wait stops the run and returns Run's error.
func (r *run) wait(t testing.TB) error {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		return err
	case <-time.After(60 * time.Second):
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2) // where it is stuck
		t.Fatal("pipeline did not stop within 60s")
		return nil
	}
}

// committedSum returns the sum of the group's committed offsets over the topic's partitions.
func committedSum(t testing.TB, addr, group, topic string, partitions int) int64 {
	t.Helper()
	sum, err := kafkatest.CommittedSum(addr, group, topic, partitions)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// checkAll asserts set equality (every wanted value seen at least once) and that commits
// reached the end of every partition.
func checkAll(t testing.TB, s *seen, want map[string]bool, addr, group, topic string, parts int) {
	t.Helper()
	if miss := s.missing(want); len(miss) > 0 {
		t.Fatalf("%d of %d values lost, e.g. %v", len(miss), len(want), miss[:min(5, len(miss))])
	}
	kafkatest.WaitFor(t, 15*time.Second, "commits to reach the end", func() bool {
		return committedSum(t, addr, group, topic, parts) == int64(len(want))
	})
}
