package kafka_test

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

func TestMain(m *testing.M) {
	if os.Getenv("SLUICE_META_CHILD") != "" { // the consumer TestCommitMetadataAfterSIGKILL kills
		os.Exit(metaKillChild())
	}
	if os.Getenv("SLUICE_EOS_CHILD") != "" { // the pipeline TestExactlyOnceCrash kills
		os.Exit(eosCrashChild())
	}
	// IgnoreCurrent: ants starts its default pool's goroutines at init.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// running is a pipeline running in the background.
type running struct {
	p      *pipeline.Pipeline
	src    *kafka.Source
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels the pipeline and returns Run's error (idempotent).
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(60 * time.Second):
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2) // where it is stuck
			r.err = fmt.Errorf("pipeline did not stop within 60s")
		}
	})
	return r.err
}

// start builds a pipeline on src (its PipelineOptions plus opts) with wire, runs it in the
// background and stops it at the end of the test.
func start(t testing.TB, src *kafka.Source, wire func(b *pipeline.Builder), opts ...pipeline.Option) *running {
	t.Helper()
	b := pipeline.New(src, append(append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger())), opts...)...)
	wire(b)
	p, err := b.Build()
	if err != nil {
		_ = src.Close(context.Background())
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, src: src, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop() })
	return r
}

func newSource(t testing.TB, cfg kafka.Config) *kafka.Source {
	t.Helper()
	src, err := kafka.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// rec identifies a consumed record.
type rec struct {
	Partition int32
	Offset    int64
	Key       string
	Value     string
}

// seen is a concurrency-safe multiset of consumed records.
type seen struct {
	mu   sync.Mutex
	recs []rec
}

func (s *seen) add(ev *stage.Event) {
	r := rec{ev.Partition, ev.Offset, string(ev.Key), string(ev.Value)}
	s.mu.Lock()
	s.recs = append(s.recs, r)
	s.mu.Unlock()
}

func (s *seen) all() []rec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rec(nil), s.recs...)
}

// sink returns a sink recording every event into s, after work (may be nil).
func (s *seen) sink(name string, work func(ev *stage.Event), opts ...stage.Option) *stage.Stage[*stage.Event, stage.None] {
	return stage.Sink(name, func(_ context.Context, ev *stage.Event) error {
		if work != nil {
			work(ev)
		}
		s.add(ev)
		return nil
	}, opts...)
}

// values returns how often each value was seen.
func values(rs []rec) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		m[r.Value]++
	}
	return m
}

// requireSet fails unless got holds every wanted value and nothing else.
func requireSet(t testing.TB, want map[string]bool, got map[string]int) {
	t.Helper()
	for v := range want {
		if got[v] == 0 {
			t.Fatalf("missing %q (%d distinct of %d seen)", v, len(got), len(want))
		}
	}
	for v := range got {
		if !want[v] {
			t.Fatalf("unexpected value %q", v)
		}
	}
}

// produceValues writes values (keys[i] may be nil) to topic and waits for delivery; it returns
// the partition and offset of each.
func produceValues(t testing.TB, addr, topic string, keys, vals [][]byte) []ckafka.TopicPartition {
	t.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": addr, "enable.idempotence": true, "acks": "all", "linger.ms": 5, "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	reports := make(chan ckafka.Event, len(vals))
	for i, v := range vals {
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny}, Key: keys[i], Value: v, Opaque: i}
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
	out := make([]ckafka.TopicPartition, len(vals))
	for range vals {
		m := (<-reports).(*ckafka.Message)
		if m.TopicPartition.Error != nil {
			t.Fatal(m.TopicPartition.Error)
		}
		out[m.Opaque.(int)] = m.TopicPartition
	}
	return out
}

// readMessages consumes topic from the beginning until n messages (or the deadline).
func readMessages(t testing.TB, addr, topic string, n int, d time.Duration) []*ckafka.Message {
	t.Helper()
	out, err := kafkatest.ReadMessages(addr, topic, n, d)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// highWatermarks returns the end offset of each partition of topic.
func highWatermarks(t testing.TB, addr, topic string, partitions int) []int64 {
	t.Helper()
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": addr, "group.id": "hwm", "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := make([]int64, partitions)
	for i := range out {
		_, hi, err := c.QueryWatermarkOffsets(topic, int32(i), 5000)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = hi
	}
	return out
}

// requireCommittedAtEnd fails unless the group's committed offsets equal the high watermarks.
func requireCommittedAtEnd(t testing.TB, addr, group, topic string, partitions int) {
	t.Helper()
	hw := highWatermarks(t, addr, topic, partitions)
	var got []int64
	kafkatest.WaitFor(t, 10*time.Second, "committed offsets to reach the high watermarks", func() bool {
		got = committed(t, addr, group, topic, partitions)
		for i := range hw {
			if got[i] != hw[i] {
				return false
			}
		}
		return true
	})
}

// maxTracker tracks a running count and its maximum.
type maxTracker struct {
	mu       sync.Mutex
	cur, max int
}

func (m *maxTracker) enter() {
	m.mu.Lock()
	m.cur++
	m.max = max(m.max, m.cur)
	m.mu.Unlock()
}

func (m *maxTracker) leave() {
	m.mu.Lock()
	m.cur--
	m.mu.Unlock()
}

func (m *maxTracker) peak() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.max
}
