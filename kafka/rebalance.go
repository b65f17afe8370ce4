package kafka

import (
	"sync/atomic"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

type tpKey struct {
	topic     string
	partition int32
}

// partState is one assigned partition's current sequence of offsets (or, retired, an earlier
// assignment or sequence whose events are still in flight). Fields marked "mu" are guarded by
// Source.mu; the rest belong to the polling goroutine.
type partState struct {
	tp       tpKey
	epoch    uint64   // mu (changed only by restartSeq)
	tr       *tracker // mu
	inflight int      // mu: events of this epoch emitted and not completed
	g        *gate    // mu: the partition's ordering gate (shared by its epochs)
	revoking bool     // mu (written by the polling goroutine only)
	gone     bool     // mu: retired; completions release their slots and are never committed

	held          []*ckafka.Message // messages received but not emitted, in offset order
	heldBytes     int64             // their bytes, counted by msgSize
	paused        bool              // set only through setPaused
	pausedNow     atomic.Bool       // paused, for Stats on other goroutines
	gatedNow      bool              // flush gated one of its messages: the rest of the burst waits too
	committed     int64             // last committed offset, -1 none
	committedMeta string            // the binary metadata committed with it (meta.go)
	skip          *finishedSet      // offsets a previous owner finished (commit metadata): not emitted; nil none
	kept          *finishedSet      // offsets this member finished on an earlier assignment (Source.kept): not emitted; nil none
	low           int64             // oldest pending offset as of the last read under mu (a lower bound), -1 none
	lastRecv      int64             // the newest offset received on this assignment, -1 none
	span          int               // upper bound of tr.pending(): exact under mu, plus messages collected since
	full          bool              // paused at the span bound (window.go) until the span halves
	txnBase       int64             // exactly once: the first offset received since the assignment or rewind, -1 none (txn_rewind.go)
}

// epochs numbers partition sequences across every source of the process, so that an event's
// Origin().Tag names its source as well as its sequence (a transactional producer's dead-letter
// handler checks that its events are its source's: txnbuild.go).
var epochs atomic.Uint64

func nextEpoch() uint64 { return epochs.Add(1) }

// rebalance is the consumer's rebalance callback; librdkafka calls it from Poll (or Close) on
// the polling goroutine.
func (s *Source) rebalance(c *ckafka.Consumer, ev ckafka.Event) error {
	// The burst goes out (or is held) first: a revoke must find its partitions' messages
	// emitted or held, never taken and unsent.
	s.flush(s.runCtx)
	switch e := ev.(type) {
	case ckafka.AssignedPartitions:
		s.handshakes.reset() // the coordinator answered: authenticated
		s.assign(c, e.Partitions)
	case ckafka.RevokedPartitions:
		s.revoke(c, e.Partitions)
	}
	return nil
}

func (s *Source) assign(c *ckafka.Consumer, parts []ckafka.TopicPartition) {
	s.st.rebalances.Add(1)
	s.st.assigns.Add(1)
	s.mu.Lock()
	for _, tp := range parts {
		k := tpKey{*tp.Topic, tp.Partition}
		// The gate may still hold events of an earlier assignment on this member (let go
		// after RevokeTimeout): they stay busy for this one.
		ps := &partState{tp: k, epoch: nextEpoch(), tr: newTracker(), g: s.gateFor(k), committed: -1, lastRecv: -1, low: -1, txnBase: -1}
		old := s.parts[k]
		s.parts[k] = ps
		s.byEpoch[ps.epoch] = ps
		if old != nil { // assigned again without a revoke: retire the old one
			s.letGo(c, old)
			s.keep(old)
			s.retire(old)
		}
	}
	s.last = nil
	s.st.assigned.Store(int64(len(s.parts)))
	s.mu.Unlock()
	// The protocol is known once the group assigned (before the first join librdkafka says
	// "NONE"); ask here, not in revoke, which may run inside Close, where the query blocks.
	s.coop = c.GetRebalanceProtocol() == "COOPERATIVE"
	if !s.closing { // an assignment while closing is given up at once: no coordinator round trip
		s.readFinished(c, parts)
	}
	var err error
	if s.coop {
		err = c.IncrementalAssign(parts)
	} else {
		err = c.Assign(parts)
	}
	if err != nil {
		s.st.errors.Add(1)
		s.log.Error("sluice/kafka: assign", "partitions", len(parts), "err", err)
		return
	}
	s.log.Info("sluice/kafka: partitions assigned", "partitions", tpList(parts), "cooperative", s.coop)
}

// revoke stops emitting the revoked partitions, drops their held messages, waits (bounded)
// for their in-flight events, commits what finished, and lets them go. A lost assignment is
// dropped at once without committing: another member may already own it. Events still in
// flight keep their partition's ordering gate (retire): if the partition comes back to this
// member, its keys (OrderKey) or the partition (OrderPartition) stay busy until they finish.
func (s *Source) revoke(c *ckafka.Consumer, parts []ckafka.TopicPartition) {
	began := time.Now()
	s.st.rebalances.Add(1)
	s.st.revokes.Add(1)
	lost := c.AssignmentLost()
	var states []*partState
	s.mu.Lock()
	for _, tp := range parts {
		if ps := s.parts[tpKey{*tp.Topic, tp.Partition}]; ps != nil {
			ps.revoking = true
			states = append(states, ps)
		}
	}
	s.mu.Unlock()
	// Inside Close the pipeline has drained and Close has just committed: nothing to wait for,
	// and a synchronous commit from this callback would block the consumer's close.
	if s.txn != nil && !s.closing {
		s.txnRevoke(lost) // before letGo: a drain may still emit their held messages
	}
	for _, ps := range states {
		s.letGo(c, ps)
	}
	if s.txn == nil && !lost && !s.closing {
		deadline := time.Now().Add(s.cfg.RevokeTimeout)
		s.waitInFlight(states)
		s.commitRevoked(states, deadline)
	}
	var err error
	if s.coop {
		err = c.IncrementalUnassign(parts)
	} else {
		err = c.Unassign()
	}
	if err != nil {
		s.log.Warn("sluice/kafka: unassign", "err", err)
	}
	s.mu.Lock()
	for _, ps := range states {
		s.keep(ps)
		delete(s.parts, ps.tp)
		s.retire(ps)
	}
	s.last = nil
	s.st.assigned.Store(int64(len(s.parts)))
	s.mu.Unlock()
	took := time.Since(began)
	s.st.revokeNanos.Add(uint64(took))
	s.log.Info("sluice/kafka: partitions revoked", "partitions", tpList(parts), "lost", lost, "took", took)
}

// letGo drops a partition's held messages (the next owner fetches them again) and resumes it
// if it was paused: librdkafka keeps a partition's pause flag across unassign and reassign, so
// a later assignment of it to this member would otherwise never fetch. Polling goroutine only.
func (s *Source) letGo(c *ckafka.Consumer, ps *partState) {
	s.held -= len(ps.held)
	s.heldBytes -= ps.heldBytes
	ps.held, ps.heldBytes = nil, 0
	if ps.paused {
		if err := c.Resume([]ckafka.TopicPartition{{Topic: &ps.tp.topic, Partition: ps.tp.partition}}); err != nil {
			s.log.Warn("sluice/kafka: resume on revoke", "topic", ps.tp.topic, "partition", ps.tp.partition, "err", err)
		}
		s.setPaused(ps, false)
	}
}

// waitInFlight waits until the partitions have no event in flight, or RevokeTimeout.
func (s *Source) waitInFlight(states []*partState) {
	deadline := time.NewTimer(s.cfg.RevokeTimeout)
	defer deadline.Stop()
	for {
		n := 0
		s.mu.Lock()
		for _, ps := range states {
			n += ps.inflight
		}
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-s.revokeWake:
		case <-deadline.C:
			s.st.revokeTimeouts.Add(1)
			s.log.Warn("sluice/kafka: revoke timeout: letting partitions go with events in flight (they will be consumed again by the next owner)", "in_flight", n, "timeout", s.cfg.RevokeTimeout)
			return
		}
	}
}

func tpList(parts []ckafka.TopicPartition) []string {
	out := make([]string, len(parts))
	for i, tp := range parts {
		out[i] = ckafka.TopicPartition{Topic: tp.Topic, Partition: tp.Partition, Offset: ckafka.OffsetInvalid}.String()
	}
	return out
}
