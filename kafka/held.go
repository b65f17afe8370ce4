package kafka

import (
	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/pipeline"
)

// The messages the source holds back (received, not yet emitted: see hold in source.go) are
// bounded by Memory.Held in the bytes the pipeline's default size function counts: at half of
// it the partition that holds one more is paused, at Held every partition is, and none resumes
// until they hold less (resumeIfRoom). Polling goroutine only.

// msgSize is what m holds on the heap, counted as pipeline.EventSize counts the event made from
// it: key, value, header names and values, pipeline.HeaderOverhead per header and
// pipeline.EventOverhead. Held messages and runs are counted with it whatever size function the
// pipeline uses, so Memory.Held bounds what they really hold.
func msgSize(m *ckafka.Message) int64 {
	n := int64(len(m.Key)+len(m.Value)) + pipeline.EventOverhead
	for i := range m.Headers {
		n += int64(len(m.Headers[i].Key)+len(m.Headers[i].Value)) + pipeline.HeaderOverhead
	}
	return n
}

// pausePartitions pauses ps, or every assigned partition when ps is nil, unless already paused.
func (s *Source) pausePartitions(ps *partState) {
	var tps []ckafka.TopicPartition
	var which []*partState
	add := func(p *partState) {
		if !p.paused {
			tps = append(tps, ckafka.TopicPartition{Topic: &p.tp.topic, Partition: p.tp.partition})
			which = append(which, p)
		}
	}
	if ps != nil {
		add(ps)
	} else {
		for _, p := range s.parts {
			add(p)
		}
	}
	if len(tps) == 0 {
		return
	}
	if err := s.c.Pause(tps); err != nil {
		s.log.Warn("sluice/kafka: pause", "partitions", len(tps), "topic", *tps[0].Topic, "partition", tps[0].Partition, "err", err)
		return
	}
	for _, p := range which {
		p.paused = true
	}
	s.st.paused.Add(int64(len(which)))
	s.st.pauses.Add(uint64(len(which)))
}
