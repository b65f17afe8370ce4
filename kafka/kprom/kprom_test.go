package kprom_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/kafka/kprom"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

func TestMain(m *testing.M) {
	// IgnoreCurrent: ants starts its default pool's goroutines at init.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// produce writes n records of size bytes (value prefix first) to one partition and waits for
// every delivery.
func produce(t *testing.T, addr, topic string, partition int32, n, size int, prefix string) {
	t.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": addr, "enable.idempotence": true, "acks": "all", "linger.ms": 5, "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	reports := make(chan ckafka.Event, n)
	for range n {
		v := make([]byte, max(size, len(prefix)))
		copy(v, prefix)
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: partition}, Value: v}
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

// gate blocks the sink while closed.
type gate struct {
	mu sync.Mutex
	ch chan struct{}
}

func (g *gate) wait() {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	<-ch
}

// set opens or closes the gate (either is idempotent).
func (g *gate) set(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.ch: // open
		if !open {
			g.ch = make(chan struct{})
		}
	default:
		if open {
			close(g.ch)
		}
	}
}

// partitions returns a per-partition family's values by "topic[partition]", failing unless
// every series has exactly the labels topic and partition.
func partitions(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if len(l) != 2 || l["topic"] == "" || l["partition"] == "" {
				t.Fatalf("%s has labels %v, want topic and partition", name, l)
			}
			out[l["topic"]+"["+l["partition"]+"]"] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	if m.GetGauge() != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}

func all(m map[string]float64, v float64, keys ...string) bool {
	if len(m) != len(keys) {
		return false
	}
	for _, k := range keys {
		if x, ok := m[k]; !ok || x != v {
			return false
		}
	}
	return true
}

// TestMetrics runs a pipeline on the embedded broker and reads the metrics: no partition
// before the group assigns (Ready fails), lag 0 per partition once consumed, a blocked sink
// with a small budget pauses both partitions (1 per partition, the lag shows the backlog),
// and after release everything returns to 0; dead letters and rebalances are counted.
func TestMetrics(t *testing.T) {
	const backlog, size = 200, 8 << 10
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 2), kafkatest.Topic("dlq", 1))
	src, err := kafka.NewSource(kafka.Config{Brokers: cl.Addr(), GroupID: "g-kprom", Topics: []string{"in"}, Overrides: kafkatest.FastGroup(),
		CommitInterval: 100 * time.Millisecond, StatsInterval: 100 * time.Millisecond, Logger: kafkatest.Logger(),
		Budget: 1 << 20, MaxMessageBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := src.NewProducer(kafka.ProducerConfig{})
	if err != nil {
		_ = src.Close(context.Background())
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	m := kprom.New(src, prod)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)

	if err := m.Ready(); !errors.Is(err, kprom.ErrNotAssigned) {
		t.Fatalf("Ready before Run = %v, want ErrNotAssigned", err)
	}
	if n, err := testutil.GatherAndCount(reg, "sluice_partition_paused", "sluice_consumer_lag_records"); err != nil || n != 0 {
		t.Fatalf("before Run: %d per-partition series (%v), want 0", n, err)
	}

	g := &gate{ch: make(chan struct{})}
	g.set(true)
	b := pipeline.New(src, pipeline.WithLogger(kafkatest.Logger()), pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
	pipeline.To(b.Source(), stage.Sink("blocked", func(_ context.Context, ev *stage.Event) error {
		g.wait()
		if strings.HasPrefix(string(ev.Value), "POISON") {
			return errors.New("poison")
		}
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		_ = src.Close(context.Background())
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	defer func() { // after a failure too: Run returns only once the sink does
		if !stopped {
			g.set(true)
			cancel()
			<-done
		}
	}()

	kafkatest.WaitFor(t, 60*time.Second, "Ready", func() bool { return m.Ready() == nil })
	if err := testutil.GatherAndCompare(reg, strings.NewReader("# HELP sluice_assigned_partitions Partitions assigned to this consumer.\n# TYPE sluice_assigned_partitions gauge\nsluice_assigned_partitions 2\n"),
		"sluice_assigned_partitions"); err != nil {
		t.Fatal(err)
	}

	// Consumed: a lag of 0 on each partition, labelled topic and partition; nothing paused.
	produce(t, cl.Addr(), "in", 0, 10, 10, "ok")
	produce(t, cl.Addr(), "in", 1, 10, 10, "ok")
	produce(t, cl.Addr(), "in", 0, 1, 10, "POISON")
	kafkatest.WaitFor(t, 60*time.Second, "lag 0 on both partitions", func() bool {
		return p.Stats().Completed == 21 && all(partitions(t, reg, "sluice_consumer_lag_records"), 0, "in[0]", "in[1]")
	})
	if pp := partitions(t, reg, "sluice_partition_paused"); !all(pp, 0, "in[0]", "in[1]") {
		t.Fatalf("sluice_partition_paused = %v, want 0 for in[0] and in[1]", pp)
	}
	if s := m.Summary(); s.Assigned != 2 || s.Paused != 0 || s.Lag != 0 || len(s.PausedPartitions) != 0 {
		t.Fatalf("Summary consumed = %+v", s)
	}
	for name, want := range map[string]float64{"sluice_dead_letters_total": 1, "sluice_producer_delivery_errors_total": 0} {
		if v := single(t, reg, name); v != want {
			t.Fatalf("%s = %v, want %v", name, v, want)
		}
	}
	for _, name := range []string{"sluice_commits_total", "sluice_librdkafka_connections", "sluice_librdkafka_rx_bytes_total", "sluice_librdkafka_tx_bytes_total"} {
		if v := single(t, reg, name); v <= 0 {
			t.Fatalf("%s = %v, want > 0", name, v)
		}
	}

	// Blocked with a small budget: both partitions paused.
	g.set(false)
	produce(t, cl.Addr(), "in", 0, backlog, size, "ok")
	produce(t, cl.Addr(), "in", 1, backlog, size, "ok")
	var seen string // the last values, for a failure
	defer func() {
		if t.Failed() {
			t.Log("last seen:", seen)
		}
	}()
	// The lag counts from the high watermark librdkafka last fetched: a paused partition
	// fetches nothing, so it shows the records fetched before the pause, not the backlog.
	kafkatest.WaitFor(t, 60*time.Second, "both partitions paused with a lag", func() bool {
		pp, lag := partitions(t, reg, "sluice_partition_paused"), partitions(t, reg, "sluice_consumer_lag_records")
		seen = fmt.Sprintf("paused %v, lag %v", pp, lag)
		for _, l := range lag {
			if l <= 0 || l > backlog {
				return false
			}
		}
		return all(pp, 1, "in[0]", "in[1]") && len(lag) == 2
	})
	if s := m.Summary(); s.Assigned != 2 || s.Paused != 2 || s.Lag <= 0 || s.Lag > 2*backlog || !slices.Equal(s.PausedPartitions, []string{"in[0]", "in[1]"}) {
		t.Fatalf("Summary blocked = %+v", s)
	}
	if v := single(t, reg, "sluice_paused_partitions"); v != 2 {
		t.Fatalf("sluice_paused_partitions = %v, want 2", v)
	}

	// Released: consumed to the end, resumed.
	g.set(true)
	kafkatest.WaitFor(t, 60*time.Second, "lag 0 and nothing paused after release", func() bool {
		return all(partitions(t, reg, "sluice_consumer_lag_records"), 0, "in[0]", "in[1]") &&
			all(partitions(t, reg, "sluice_partition_paused"), 0, "in[0]", "in[1]")
	})
	stopped = true
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`# HELP sluice_assigned_partitions Partitions assigned to this consumer.
# TYPE sluice_assigned_partitions gauge
sluice_assigned_partitions 0
`), "sluice_assigned_partitions"); err != nil {
		t.Fatal(err)
	}
	if err := m.Ready(); !errors.Is(err, kprom.ErrNotAssigned) {
		t.Fatalf("Ready after close = %v, want ErrNotAssigned", err)
	}
	reb := rebalances(t, reg)
	if reb["assigned"] < 1 || reb["revoked"] < 1 {
		t.Fatalf("sluice_rebalances_total = %v, want assigned and revoked at least once", reb)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var revokes uint64
	for _, mf := range mfs {
		if mf.GetName() == "sluice_revoke_duration_seconds" {
			revokes = mf.GetMetric()[0].GetSummary().GetSampleCount()
		}
	}
	if revokes != uint64(reb["revoked"]) {
		t.Fatalf("sluice_revoke_duration_seconds counts %d revokes, sluice_rebalances_total{kind=\"revoked\"} %v", revokes, reb["revoked"])
	}
}

// single returns the value of an unlabelled metric.
func single(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 && len(mf.GetMetric()[0].GetLabel()) == 0 {
			return value(mf.GetMetric()[0])
		}
	}
	t.Fatalf("no single unlabelled %s", name)
	return 0
}

// rebalances returns sluice_rebalances_total by its kind label.
func rebalances(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_rebalances_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if l := m.GetLabel(); len(l) == 1 && l[0].GetName() == "kind" {
				out[l[0].GetValue()] = value(m)
			}
		}
	}
	return out
}

// TestWithoutProducer: a nil producer sends no producer metrics, and a source that never ran
// is not ready and reports nothing per partition (the registry checks Describe against
// Collect).
func TestWithoutProducer(t *testing.T) {
	src, err := kafka.NewSource(kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"in"}, Logger: kafkatest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	m := kprom.New(src, nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	want := []string{"sluice_assigned_partitions", "sluice_commit_errors_total", "sluice_commits_total", "sluice_librdkafka_connections",
		"sluice_librdkafka_rx_bytes_total", "sluice_librdkafka_tx_bytes_total", "sluice_paused_partitions", "sluice_pauses_total", "sluice_rebalances_total", "sluice_revoke_duration_seconds"}
	if !slices.Equal(names, want) {
		t.Fatalf("families %v, want %v", names, want)
	}
	if err := m.Ready(); !errors.Is(err, kprom.ErrNotAssigned) {
		t.Fatalf("Ready = %v", err)
	}
	if s := m.Summary(); s.Assigned != 0 || s.Paused != 0 || s.Lag != 0 || s.PausedPartitions != nil {
		t.Fatalf("Summary = %+v", s)
	}
}
