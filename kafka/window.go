package kafka

import ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

// A partition's window is the span of records from its oldest unfinished offset to the newest
// one received (its tracker's pending entries: in flight, finished above a gap, and held). It
// is what a restart reads again and what the tracker keeps, so Config.MaxInFlightPerPartition
// bounds it, whatever one stuck event does (a blocked call, a long retry, a pending delivery).
//
// Enforcement, on the polling goroutine: ps.span is an upper bound of the span, exact
// whenever the goroutine holds s.mu (each flush, each held receipt) and counting the messages
// collected since; completions only shrink the real span. When ps.span reaches the limit the
// burst is flushed, and if the exact span is at the limit the partition is paused. librdkafka
// returns none of a partition's messages once Pause returned (those it prefetched are
// dropped and fetched again after Resume), so the span never exceeds the limit. The partition
// resumes (resumeIfRoom) once completions brought its span down to half the limit.

//
// The same pause bounds a second window, in offsets rather than records, when commit metadata
// is on (meta.go): from the oldest unfinished offset (ps.low, a lower bound) to the newest
// received one (ps.lastRecv). Whatever of it finishes, its bitset then fits in
// Config.CommitMetadataMaxBytes; the partition resumes once the commit point moved up and
// the range is down to half (what keeps the span from shrinking, a slow oldest offset, is what
// keeps the commit from moving).

// atBound reports whether ps's span or offset range (as the polling goroutine knows them) is
// at its limit.
func (s *Source) atBound(ps *partState) bool {
	return ps.span >= s.cfg.MaxInFlightPerPartition || (s.metaRange > 0 && s.offRange(ps) >= s.metaRange)
}

// offRange returns the offsets from ps's oldest unfinished one to its newest received one
// (an upper bound; 0 when none is pending).
func (s *Source) offRange(ps *partState) int64 {
	if ps.low < 0 {
		return 0
	}
	return ps.lastRecv - ps.low
}

// pauseFull marks ps as held at the span bound and pauses it (if not paused already).
func (s *Source) pauseFull(ps *partState) {
	ps.full = true
	s.pausePartitions(ps)
}

// refreshSpans re-reads the span of the partitions held at the bound (only completions shrink
// it: the caller calls it when some finished) and releases those down to half the limit,
// which resumeIfRoom then resumes. One lock, only while some partition is held.
func (s *Source) refreshSpans() {
	held := false
	for _, ps := range s.parts {
		held = held || ps.full
	}
	if !held {
		return
	}
	s.mu.Lock()
	for _, ps := range s.parts {
		if ps.full {
			ps.span, ps.low = ps.tr.pending(), ps.tr.low()
			ps.full = ps.span > s.cfg.MaxInFlightPerPartition/2 || (s.metaRange > 0 && s.offRange(ps) > s.metaRange/2)
		}
	}
	s.mu.Unlock()
}

// rewindTo handles offsets that moved backwards but not below the sequence's oldest unfinished
// offset: librdkafka delivered m again (seen in the chaos soak: the last offset received came
// again after an incremental assignment while the partition was paused), or the log was
// truncated above that offset. A new sequence from m would never see the unfinished offsets
// below m again (held messages are dropped, events in flight are not committed), and would
// commit past them: those records would be lost. So the partition goes back to the oldest
// unfinished offset (Seek) and the new sequence starts there: what finished between it and m
// is processed again (duplicates), nothing is skipped. It reports whether it did (m is then
// dropped: it comes again). Polling goroutine; the caller flushed the burst.
func (s *Source) rewindTo(ps *partState, m *ckafka.Message) bool {
	s.mu.Lock()
	low := ps.tr.low()
	s.mu.Unlock()
	if low < 0 || int64(m.TopicPartition.Offset) <= low {
		return false // nothing unfinished below m: the new sequence from m skips nothing
	}
	// librdkafka handles the seek on its own threads at once; once it returns, no message
	// fetched before it is delivered.
	res, err := s.c.SeekPartitions([]ckafka.TopicPartition{{Topic: &ps.tp.topic, Partition: ps.tp.partition, Offset: ckafka.Offset(low)}})
	if err == nil && len(res) == 1 && res[0].Error != nil {
		err = res[0].Error
	}
	if err != nil {
		s.log.Warn("sluice/kafka: seek back to the oldest unfinished offset failed: starting from the lower offset", "topic", ps.tp.topic, "partition", ps.tp.partition, "offset", low, "err", err)
		return false
	}
	s.restartSeq(ps, m)
	ps.lastRecv = low - 1
	return true
}

// restartSeq starts a new sequence of ps's offsets: m's offset is not above the last one
// received on this assignment, because the log went back (truncated, or the topic deleted and
// re-created) and librdkafka's auto.offset.reset moved the position down. The tracker needs
// increasing offsets, so the new sequence gets a fresh one under a new epoch, and its commits
// may go below the old ones. The old sequence's events in flight keep their ordering slots
// under the old epoch until they complete, never committed; its held messages were never
// emitted and are dropped: the log they came from no longer has them.
//
// Polling goroutine; the caller flushed the burst first, so it holds none of ps's messages.
func (s *Source) restartSeq(ps *partState, m *ckafka.Message) {
	s.st.rewinds.Add(1)
	s.log.Warn("sluice/kafka: offsets moved backwards (log truncated or topic re-created): committing from the new offsets",
		"topic", ps.tp.topic, "partition", ps.tp.partition, "offset", int64(m.TopicPartition.Offset), "last", ps.lastRecv, "held_dropped", len(ps.held))
	s.letGo(s.c, ps) // drop the old held messages; resume if paused
	s.newSequence(ps)
}

// newSequence gives ps a fresh tracker under a new epoch (restartSeq, and the exactly-once
// rewind after an abort: txn_rewind.go); the old sequence's events in flight keep their
// ordering slots under the old epoch until they complete, never committed. The caller let go
// of ps's held messages.
func (s *Source) newSequence(ps *partState) {
	s.mu.Lock()
	old := &partState{tp: ps.tp, epoch: ps.epoch, tr: ps.tr, inflight: ps.inflight, g: ps.g}
	s.byEpoch[old.epoch] = old
	s.retire(old)
	ps.epoch, ps.tr, ps.inflight = nextEpoch(), newTracker(), 0
	s.byEpoch[ps.epoch] = ps
	s.mu.Unlock()
	ps.committed, ps.span, ps.full = -1, 0, false
	ps.committedMeta, ps.skip, ps.kept, ps.low = "", nil, nil, -1 // what was read at assignment was about the old log
}
