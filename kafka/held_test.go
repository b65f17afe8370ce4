package kafka

import (
	"testing"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/pipeline"
)

// A held message counts what the event made from it counts under the default size function, so
// Memory.Held bounds held-back messages in the same bytes as the budget bounds events.
func TestHeldMessageCountsAsEventSize(t *testing.T) {
	topic := "t"
	s := &Source{}
	ps := &partState{tp: tpKey{topic, 3}, epoch: 1}
	for _, m := range []*ckafka.Message{
		{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: 3, Offset: 7}},
		{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: 3, Offset: 8}, Key: []byte("key"), Value: make([]byte, 100),
			Headers: []ckafka.Header{{Key: "trace", Value: make([]byte, 64<<10)}, {Key: "n"}}},
	} {
		ev := s.event(ps, m)
		got, want := msgSize(m), pipeline.EventSize(ev)
		s.dropEvent(ev)
		if got != want {
			t.Fatalf("offset %d: msgSize %d, EventSize of its event %d", m.TopicPartition.Offset, got, want)
		}
	}
}
