package kafka_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
)

func sourceConfig(addr, group string, topics ...string) kafka.Config {
	return kafka.Config{Brokers: addr, GroupID: group, Topics: topics, Overrides: kafkatest.FastGroup(),
		CommitInterval: 200 * time.Millisecond, Logger: kafkatest.Logger(), Budget: 16 << 20}
}

// produceN writes n records "prefix-i" (key "k-(i%keys)") to topic and waits for delivery.
func produceN(t testing.TB, addr, topic, prefix string, n, keys int) map[string]bool {
	t.Helper()
	want, err := kafkatest.ProduceN(addr, topic, prefix, n, keys)
	if err != nil {
		t.Fatal(err)
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
