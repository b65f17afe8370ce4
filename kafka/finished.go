package kafka

import (
	"context"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Finished work is not redone after a handover: on assignment the source reads the committed
// offsets' metadata (the finished offsets above each committed offset, written by the
// partition's previous owner or by this member before a restart: meta.go) and completes those
// offsets as they arrive, without emitting them. They are recorded finished in the tracker, so
// the commit moves past them and this member's own commits carry them on while they are above
// its commit point.

// readFinished reads the committed offsets' metadata of newly assigned partitions into their
// skip sets. It asks the group coordinator (librdkafka's assignment does not carry the
// metadata), bounded by RevokeTimeout; a failure or a value that is not readable only costs
// duplicates: it is logged and the partitions are consumed from the committed offsets as
// usual. Polling goroutine (the assign callback).
func (s *Source) readFinished(c *ckafka.Consumer, parts []ckafka.TopicPartition) {
	if s.metaLimit == 0 || len(parts) == 0 {
		return
	}
	ask := make([]ckafka.TopicPartition, len(parts))
	for i, tp := range parts {
		ask[i] = ckafka.TopicPartition{Topic: tp.Topic, Partition: tp.Partition}
	}
	got, err := c.Committed(ask, int(s.cfg.RevokeTimeout/time.Millisecond))
	if err != nil {
		s.st.metaIgnored.Add(uint64(len(parts)))
		s.log.Warn("sluice/kafka: reading the committed offsets' metadata failed: finished work above them may be processed again", "partitions", tpList(parts), "err", err)
		return
	}
	for _, tp := range got {
		ps := s.parts[tpKey{*tp.Topic, tp.Partition}]
		if ps == nil || tp.Metadata == nil {
			continue
		}
		f, err := decodeMeta(*tp.Metadata, int64(tp.Offset))
		if err != nil {
			s.st.metaIgnored.Add(1)
			s.log.Warn("sluice/kafka: commit metadata ignored: finished work above the committed offset may be processed again",
				"topic", *tp.Topic, "partition", tp.Partition, "offset", int64(tp.Offset), "err", err)
			continue
		}
		ps.skip = f
	}
}

// skipFinished completes m without emitting it if a previous owner finished it (ps.skip), and
// reports whether it did. Polling goroutine; the caller set ps.lastRecv.
func (s *Source) skipFinished(ctx context.Context, ps *partState, m *ckafka.Message) bool {
	off := int64(m.TopicPartition.Offset)
	done, past := ps.skip.has(off)
	if past {
		ps.skip = nil
	}
	if !done {
		return false
	}
	if len(s.burst) > 0 {
		s.flush(ctx) // the tracker takes offsets in order: the burst's (some may be ps's) first
	}
	s.mu.Lock()
	ps.tr.received(off, nil)
	ps.tr.finished(off)
	ps.span, ps.low = ps.tr.pending(), ps.tr.low()
	s.mu.Unlock()
	s.st.skipped.Add(1)
	s.st.doneSeq.Add(1) // the span may have shrunk: re-read it if the partition is held at the bound
	return true
}
