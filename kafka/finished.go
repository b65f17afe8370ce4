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
//
// A member also keeps, for a partition it lets go without a commit confirming everything it
// finished (a lost assignment commits nothing; a revoke's commit can fail while the group
// rebalances), what it finished: the group often gives the partition straight back, and the
// member then skips those offsets too (Source.keep). Both sets are as safe as the offsets they
// name: they are wrong only if the partition's log was deleted and written again in between.

// readFinished reads the committed offsets' metadata of newly assigned partitions into their
// skip sets. It asks the group coordinator (librdkafka's assignment does not carry the
// metadata), bounded by RevokeTimeout; a failure or a value that is not readable only costs
// duplicates: it is logged and the partitions are consumed from the committed offsets as
// usual. Polling goroutine (the assign callback).
func (s *Source) readFinished(c *ckafka.Consumer, parts []ckafka.TopicPartition) {
	if s.metaLimit == 0 || len(parts) == 0 {
		return
	}
	for _, tp := range parts {
		k := tpKey{*tp.Topic, tp.Partition}
		if f := s.kept[k]; f != nil {
			s.parts[k].kept = f
			delete(s.kept, k)
		}
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

// keep records, for a partition being let go (revoke, lost or not), what ps finished beyond
// what a commit confirmed: a lost assignment does not commit, and a revoke's commit may fail
// (a rebalance in progress, an illegal generation, the coordinator away). The group often
// assigns the partition straight back to this member, which then skips those offsets
// (readFinished) instead of processing them again from the committed offset. Polling
// goroutine; caller holds s.mu.
//
// Never in exactly-once mode: there a finished event's output is in the open transaction,
// which a partition let go without a commit aborts, so its offsets must be processed again.
func (s *Source) keep(ps *partState) {
	if s.metaLimit == 0 || s.txn != nil {
		return
	}
	delete(s.kept, ps.tp)
	off, meta, _ := ps.tr.commitPoint(s.metaBuf, s.metaLimit)
	s.metaBuf = meta[:0]
	if off < 0 || (off <= ps.committed && string(meta) == ps.committedMeta) {
		return // the committed offset and metadata say as much
	}
	if f := keptSet(ps.tr.first, ps.tr.next, off, meta); f != nil {
		if s.kept == nil {
			s.kept = map[tpKey]*finishedSet{}
		}
		s.kept[ps.tp] = f
	}
}

// passFinished reports whether *f holds off, and drops *f once off is past its last offset.
func passFinished(f **finishedSet, off int64) bool {
	if *f == nil {
		return false
	}
	d, past := (*f).has(off)
	if past {
		*f = nil
	}
	return d
}

// skipFinished completes m without emitting it if a previous owner finished it (ps.skip) or
// this member did on an earlier assignment (ps.kept), and reports whether it did. Polling
// goroutine; the caller set ps.lastRecv.
func (s *Source) skipFinished(ctx context.Context, ps *partState, m *ckafka.Message) bool {
	off := int64(m.TopicPartition.Offset)
	skipped, kept := passFinished(&ps.skip, off), passFinished(&ps.kept, off) // both: each drops a set it passed
	if !skipped && !kept {
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
