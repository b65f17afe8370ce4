package kafkatest

import (
	"fmt"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Committed returns group's committed offset of each partition of topic (index = partition),
// read with a short-lived librdkafka consumer. A partition with no commit has a negative
// offset (librdkafka's OffsetInvalid).
func Committed(brokers, group, topic string, partitions int) ([]int64, error) {
	return CommittedWith(map[string]any{"bootstrap.servers": brokers}, group, topic, partitions)
}

// CommittedWith is Committed with the client's librdkafka properties (bootstrap.servers and
// any security ones: Cluster.ClientConfig) instead of a bootstrap list.
func CommittedWith(props map[string]any, group, topic string, partitions int) ([]int64, error) {
	c, err := ckafka.NewConsumer(withProps(props, ckafka.ConfigMap{"group.id": group, "log_level": 3}))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	tps := make([]ckafka.TopicPartition, partitions)
	for i := range tps {
		tps[i] = ckafka.TopicPartition{Topic: &topic, Partition: int32(i)}
	}
	res, err := c.Committed(tps, 5000)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: committed offsets of %s for %s: %w", group, topic, err)
	}
	out := make([]int64, partitions)
	for _, r := range res {
		out[r.Partition] = int64(r.Offset)
	}
	return out, nil
}

// CommittedSum returns the sum of group's committed offsets over topic's partitions (partitions
// with no commit count 0): with every partition starting at offset 0, the number of records
// committed.
func CommittedSum(brokers, group, topic string, partitions int) (int64, error) {
	return CommittedSumWith(map[string]any{"bootstrap.servers": brokers}, group, topic, partitions)
}

// CommittedSumWith is CommittedSum with the client's librdkafka properties (see
// CommittedWith).
func CommittedSumWith(props map[string]any, group, topic string, partitions int) (int64, error) {
	offs, err := CommittedWith(props, group, topic, partitions)
	var sum int64
	for _, o := range offs {
		sum += max(o, 0)
	}
	return sum, err
}

// ReadMessages consumes topic from the beginning with a fresh group until n messages were read
// or d passed, and returns them in the order received.
func ReadMessages(brokers, topic string, n int, d time.Duration) ([]*ckafka.Message, error) {
	return ReadMessagesWith(map[string]any{"bootstrap.servers": brokers}, topic, n, d)
}

// ReadMessagesWith is ReadMessages with the client's librdkafka properties (see
// CommittedWith).
func ReadMessagesWith(props map[string]any, topic string, n int, d time.Duration) ([]*ckafka.Message, error) {
	c, err := ckafka.NewConsumer(withProps(props, ckafka.ConfigMap{"group.id": fmt.Sprintf("kafkatest-reader-%d", time.Now().UnixNano()),
		"auto.offset.reset": "earliest", "enable.auto.commit": false, "log_level": 3, "fetch.wait.max.ms": 50}))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Subscribe(topic, nil); err != nil {
		return nil, err
	}
	var out []*ckafka.Message
	for end := time.Now().Add(d); len(out) < n && time.Now().Before(end); {
		if m, ok := c.Poll(100).(*ckafka.Message); ok && m.TopicPartition.Error == nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// ProduceN writes n records to topic, value "prefix-i" and key "k-(i%keys)", with an
// idempotent producer, and waits for every delivery. It returns the set of values written.
func ProduceN(brokers, topic, prefix string, n, keys int) (map[string]bool, error) {
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "enable.idempotence": true, "acks": "all", "linger.ms": 5, "log_level": 3})
	if err != nil {
		return nil, err
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
			return nil, err
		}
	}
	for range n {
		if m := (<-reports).(*ckafka.Message); m.TopicPartition.Error != nil {
			return nil, m.TopicPartition.Error
		}
	}
	return want, nil
}

// Produce writes values to topic in order, with no key, through an idempotent producer, and
// waits for every delivery. It is for examples and tests that need a few specific records.
func Produce(brokers, topic string, values ...string) error {
	return ProduceWith(map[string]any{"bootstrap.servers": brokers}, topic, values...)
}

// ProduceWith is Produce with the client's librdkafka properties (see CommittedWith).
func ProduceWith(props map[string]any, topic string, values ...string) error {
	p, err := ckafka.NewProducer(withProps(props, ckafka.ConfigMap{"enable.idempotence": true, "acks": "all", "linger.ms": 5, "log_level": 3}))
	if err != nil {
		return err
	}
	defer p.Close()
	reports := make(chan ckafka.Event, len(values))
	for _, v := range values {
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny}, Value: []byte(v)}
		if err := p.Produce(m, reports); err != nil {
			return fmt.Errorf("kafkatest: produce to %s: %w", topic, err)
		}
	}
	for range values {
		if m := (<-reports).(*ckafka.Message); m.TopicPartition.Error != nil {
			return fmt.Errorf("kafkatest: deliver to %s: %w", topic, m.TopicPartition.Error)
		}
	}
	return nil
}

// withProps returns base with props added (props win).
func withProps(props map[string]any, base ckafka.ConfigMap) *ckafka.ConfigMap {
	for k, v := range props {
		base[k] = v
	}
	return &base
}
