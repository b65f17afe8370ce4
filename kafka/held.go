package kafka

import (
	"context"
	"math"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/pipeline"
)

// The messages the source holds back (received, not yet emitted: see hold) are
// bounded by Memory.Held in the bytes the pipeline's default size function counts: at half of
// it the partition that holds one more is paused, at Held every partition is, and none resumes
// until they hold less (resumeIfRoom). Polling goroutine only.

// msgSize is what m holds on the heap, counted as pipeline.EventSize counts the event made from
// it: key, value, header names and values, pipeline.HeaderOverhead per header and
// pipeline.EventOverhead. Held messages and bursts are counted with it whatever size function the
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
		s.setPaused(p, true)
	}
	s.st.pauses.Add(uint64(len(which)))
}

// setPaused records that ps was paused or resumed: ps.paused for the polling goroutine,
// ps.pausedNow for Stats, and the Paused count. Polling goroutine only.
func (s *Source) setPaused(ps *partState, paused bool) {
	if ps.paused == paused {
		return
	}
	ps.paused = paused
	ps.pausedNow.Store(paused)
	if paused {
		s.st.paused.Add(1)
	} else {
		s.st.paused.Add(-1)
	}
}

// maxHeldPerPartition bounds the messages a partition holds back (waiting for their key or
// partition slot) before it is paused.
const maxHeldPerPartition = 256

// hold keeps m for later. It pauses m's partition, so librdkafka stops fetching it, when the
// pipeline is full (pause is true) or when the partition holds maxHeldPerPartition messages: a
// key or partition that is merely busy (ordering) does not cost a pause, a discarded prefetch
// and a refetch (librdkafka fetches a resumed partition again only about a second later). Once
// all partitions together hold Memory.Held it pauses every partition, and resumeIfRoom resumes
// none until they hold less: Poll returns nothing of a paused partition, so only the rest of
// the burst being flushed can still be held (Memory.HeldMax).
//
// A record larger than the in-flight budget (oversized: it reaches the pipeline only through
// the error handler, one at a time) is held outside Memory.Held, which it would fill by itself
// and so pause every partition while a dead-letter topic is down: it pauses its own partition
// only (Poll then returns nothing more of it, so a partition holds at most the oversized
// records of one burst: one, since a burst ends at maxBurstBytes). Records above the budget are
// outside the memory formula.
func (s *Source) hold(ps *partState, m *ckafka.Message, pause bool) {
	n := s.heldSize(m)
	ps.held = append(ps.held, m)
	ps.heldBytes += n
	s.held++
	s.heldBytes += n
	switch {
	case s.heldBytes >= s.mem.Held:
		s.pausePartitions(nil)
	case pause || len(ps.held) >= maxHeldPerPartition:
		s.pausePartitions(ps)
	}
}

// heldSize is what m counts against Memory.Held: msgSize, or 0 for an oversized record (see
// hold).
func (s *Source) heldSize(m *ckafka.Message) int64 {
	if n := msgSize(m); n <= s.emit.Limit() {
		return n
	}
	return 0
}

// retryHeld emits what it can of the held messages, keeping each partition's order (and, in
// key mode, each key's order).
func (s *Source) retryHeld(ctx context.Context) {
	if t := s.txn; t != nil && (!t.began || t.stopping) {
		return // nothing may be emitted: every held message would be refused
	}
	for _, ps := range s.parts {
		if len(ps.held) == 0 {
			continue
		}
		// At a barrier a partition's held messages above its mark are refused (mayEmit); they
		// are in offset order, so the scan stops at the first of them.
		limit := int64(math.MaxInt64)
		if t := s.txn; t != nil && t.draining {
			limit = -1
			if m, ok := t.marks[ps]; ok {
				limit = m
			}
		}
		keep := ps.held[:0]
		var blocked map[string]bool // keys with an earlier message still held (key mode)
		stop := false
		for i, m := range ps.held {
			if int64(m.TopicPartition.Offset) > limit {
				keep = append(keep, ps.held[i:]...)
				break
			}
			mustWait := stop || (s.cfg.Ordering != OrderKey && len(keep) > 0) || (len(m.Key) > 0 && blocked[string(m.Key)])
			if !mustWait {
				switch s.tryEmit(ctx, ps, m) {
				case emitted:
					n := s.heldSize(m)
					s.held--
					s.heldBytes -= n
					ps.heldBytes -= n
					continue
				case full:
					stop = true
				}
			}
			keep = append(keep, m)
			if s.cfg.Ordering == OrderKey && len(m.Key) > 0 {
				if blocked == nil {
					blocked = map[string]bool{}
				}
				blocked[string(m.Key)] = true
			}
		}
		clear(ps.held[len(keep):])
		ps.held = keep
		if stop {
			return
		}
	}
}

// resumeIfRoom resumes paused partitions with nothing held once the budget is below half and
// all held messages together are below Memory.Held.
func (s *Source) resumeIfRoom() {
	if s.st.paused.Load() == 0 || s.heldBytes >= s.mem.Held {
		return
	}
	if s.emit.InFlightBytes()*2 > s.emit.Limit() {
		return
	}
	for _, ps := range s.parts {
		if ps.paused && len(ps.held) == 0 && !ps.full {
			if err := s.c.Resume([]ckafka.TopicPartition{{Topic: &ps.tp.topic, Partition: ps.tp.partition}}); err != nil {
				s.log.Warn("sluice/kafka: resume", "topic", ps.tp.topic, "partition", ps.tp.partition, "err", err)
				continue
			}
			s.setPaused(ps, false)
		}
	}
}
