package kafka_test

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
)

// quiet is the logger of the tests: warnings and errors only (SLUICE_TEST_LOG=debug for all).
func quiet() *slog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fastGroup makes rebalances quick against the embedded broker.
var fastGroup = map[string]any{"heartbeat.interval.ms": 100, "session.timeout.ms": 6000, "fetch.wait.max.ms": 50}

func sourceConfig(addr, group string, topics ...string) kafka.Config {
	return kafka.Config{Brokers: addr, GroupID: group, Topics: topics, Overrides: fastGroup,
		CommitInterval: 200 * time.Millisecond, Logger: quiet(), Budget: 16 << 20}
}

// produceN writes n records "prefix-i" (key "k-(i%keys)") to topic and waits for delivery.
func produceN(t testing.TB, addr, topic, prefix string, n, keys int) map[string]bool {
	t.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": addr, "enable.idempotence": true, "acks": "all", "linger.ms": 5, "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	want := make(map[string]bool, n)
	reports := make(chan ckafka.Event, n)
	for i := range n {
		v := fmt.Sprintf("%s-%d", prefix, i)
		want[v] = true
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny},
			Key: []byte(fmt.Sprintf("k-%d", i%keys)), Value: []byte(v)}
		if err := p.Produce(m, reports); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if m := (<-reports).(*ckafka.Message); m.TopicPartition.Error != nil {
			t.Fatal(m.TopicPartition.Error)
		}
	}
	return want
}

// readAll consumes topic from the beginning with a fresh group until want values are seen (or
// the deadline), and returns how often each value was seen.
func readAll(t testing.TB, addr, topic string, want int, deadline time.Duration) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, m := range readMessages(t, addr, topic, want, deadline) {
		got[string(m.Value)]++
	}
	return got
}

// committed returns the group's committed offsets per partition of topic.
func committed(t testing.TB, addr, group, topic string, partitions int) []int64 {
	t.Helper()
	out, err := kafkatest.Committed(addr, group, topic, partitions)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func startCluster(t testing.TB, opts ...kafkatest.Option) *kafkatest.Cluster {
	return kafkatest.StartT(t, opts...)
}
