package kafka

import (
	"context"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Commits are bounded. librdkafka's commit (CommitOffsets) waits for the group coordinator
// without a timeout of its own: an unanswered request waits socket.timeout.ms (60 s by default)
// and is retried, and a request that cannot be sent because the coordinator cannot be found is
// retried for as long as that lasts (confluentinc/librdkafka#3740). So each commit runs
// CommitOffsets on a goroutine of its own (a commitCall), and whoever starts it waits only as
// long as it may: the poll loop not at all, a revoke until the revoke deadline, Close until its
// context ends. A commit that was not waited for stays outstanding; its result is applied when
// it arrives, on the polling goroutine (or in Close), and only a successful answer marks a
// partition's offset committed.
//
// At most one commit is outstanding: the next one starts only after the previous one
// answered, so an older commit never lands after a newer one and moves a partition's
// committed offset back.
//
// No commit goroutine outlives Close: Close waits for the outstanding one before closing the
// consumer. That wait is not bounded by Close's context, and cannot be: librdkafka's consumer
// close waits for every outstanding commit to be answered (rd_kafka_cgrp_try_terminate waits
// for wait_commit_cnt to reach 0) and nothing in its API cancels one, so a coordinator outage
// that strands a commit holds the close until the coordinator answers, whoever waits for it.
// Waiting before the close rather than inside it keeps the goroutine's last calls into
// librdkafka ahead of the consumer's destruction.

// commitCall is one CommitOffsets call on its own goroutine.
type commitCall struct {
	offs   []ckafka.TopicPartition
	states []*partState  // the partitions of offs, to mark committed on success
	epochs []uint64      // each state's epoch when the commit started (see reapCommit)
	metas  []string      // each state's finished offsets above its offset, in binary form (meta.go)
	done   chan struct{} // closed when CommitOffsets returned; res and err are set then
	res    []ckafka.TopicPartition
	err    error
}

// revokeCommitMin is the least a revoke waits for its commit, even when waiting for the
// in-flight events used up RevokeTimeout: what did finish is committed, unless the
// coordinator does not answer within it.
const revokeCommitMin = time.Second

// commit is the poll loop's periodic commit (every CommitInterval). It never waits: it applies
// the outstanding commit's result if it arrived and, when none is outstanding, starts a commit
// of every assigned partition's finished offsets, whose result a later call applies. Polling
// goroutine only.
func (s *Source) commit() {
	if !s.reapCommit() {
		return // still outstanding: the coordinator is slow or away; try again next interval
	}
	s.lastCommit = time.Now()
	s.startCommit(s.assignedStates())
}

// assignedStates returns every assigned partition.
func (s *Source) assignedStates() []*partState {
	s.mu.Lock()
	defer s.mu.Unlock()
	states := make([]*partState, 0, len(s.parts))
	for _, ps := range s.parts {
		states = append(states, ps)
	}
	return states
}

// commitStates commits each of states' committable offsets that moved, after the outstanding
// commit (if any) answered, and waits for the answer until ctx ends. It reports whether the
// commit answered (successfully or not) in time; one that did not stays outstanding. Polling
// goroutine, or Close.
func (s *Source) commitStates(ctx context.Context, states []*partState) bool {
	if !s.awaitCommit(ctx) {
		s.log.Warn("sluice/kafka: commit skipped: the previous commit is still unanswered", "err", context.Cause(ctx))
		return false
	}
	s.startCommit(states)
	if !s.awaitCommit(ctx) {
		s.log.Warn("sluice/kafka: commit unanswered, not waiting longer (its offsets count as committed only if it succeeds later)", "offsets", offList(s.inCommit.offs), "err", context.Cause(ctx))
		return false
	}
	return true
}

// commitRevoked commits the revoked partitions' finished offsets, waiting for the answer until
// deadline (the end of RevokeTimeout) but at least revokeCommitMin. Polling goroutine (the
// rebalance callback).
func (s *Source) commitRevoked(states []*partState, deadline time.Time) {
	if least := time.Now().Add(revokeCommitMin); deadline.Before(least) {
		deadline = least
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	s.commitFinal(ctx, states)
}

// commitFinal is commitStates for a commit after which the partitions go to another owner
// (revoke, Close), which processes everything since the last commit again: a commit refused
// with REBALANCE_IN_PROGRESS (the group waits for its leader's assignment, e.g. a member just
// joined or left; that lasts milliseconds) is tried again until ctx ends, after a pause of
// retryMin doubling each time.
func (s *Source) commitFinal(ctx context.Context, states []*partState) {
	for wait := retryMin; s.commitStates(ctx, states) && s.rebalancing; wait *= 2 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}

// retryMin is the first pause before a final commit refused with REBALANCE_IN_PROGRESS is
// tried again.
const retryMin = 20 * time.Millisecond

// startCommit starts a commit of states' committable offsets that moved past what was
// committed (nothing if none did). No commit may be outstanding.
func (s *Source) startCommit(states []*partState) {
	var offs []ckafka.TopicPartition
	var moved []*partState
	var epochs []uint64
	var metas []string
	s.mu.Lock()
	for _, ps := range states {
		// The finished offsets above the commit point go in the metadata (meta.go): a commit
		// is due when the point moved or that set changed.
		next, meta, truncated := ps.tr.commitPoint(s.metaBuf, s.metaLimit)
		s.metaBuf = meta[:0]
		if next > ps.committed || (next >= 0 && next == ps.committed && string(meta) != ps.committedMeta) {
			if truncated {
				s.st.metaTruncated.Add(1)
			}
			tp := ckafka.TopicPartition{Topic: &ps.tp.topic, Partition: ps.tp.partition, Offset: ckafka.Offset(next)}
			if len(meta) > 0 {
				str := encodeMeta(meta)
				tp.Metadata = &str
			}
			metas = append(metas, string(meta))
			offs = append(offs, tp)
			moved = append(moved, ps)
			epochs = append(epochs, ps.epoch)
		}
	}
	s.mu.Unlock()
	if len(offs) == 0 {
		s.rebalancing = false // nothing left to commit: nothing to try again
		return
	}
	call := &commitCall{offs: offs, states: moved, epochs: epochs, metas: metas, done: make(chan struct{})}
	s.inCommit = call
	go func() {
		defer close(call.done)
		call.res, call.err = s.c.CommitOffsets(call.offs)
	}()
}

// awaitCommit waits until the outstanding commit (if any) answered, and applies its result,
// or until ctx ends. It reports whether no commit is outstanding any more.
func (s *Source) awaitCommit(ctx context.Context) bool {
	if s.inCommit == nil {
		return true
	}
	select {
	case <-s.inCommit.done:
		return s.reapCommit()
	case <-ctx.Done():
		return false
	}
}

// reapCommit applies the outstanding commit's result if it answered, without waiting. It
// reports whether no commit is outstanding any more.
func (s *Source) reapCommit() bool {
	call := s.inCommit
	if call == nil {
		return true
	}
	select {
	case <-call.done:
	default:
		return false
	}
	s.inCommit = nil
	s.rebalancing = rebalancing(call)
	if call.err != nil {
		if ke, ok := call.err.(ckafka.Error); ok && ke.Code() == ckafka.ErrFatal && s.fatal == nil {
			s.fatal = ke // raised while nobody polled (Close's commit): Close must not close it either
		}
		s.st.commitErrors.Add(1)
		s.log.Warn("sluice/kafka: commit failed (retried at the next commit)", "offsets", offList(call.offs), "err", call.err)
		return true
	}
	s.st.commits.Add(1)
	// A partition whose offsets moved backwards while the commit was out (restartSeq: new
	// epoch, committed reset to -1) keeps its reset: the answer is about the old sequence.
	byKey := make(map[tpKey]int, len(call.states))
	s.mu.Lock()
	for i, ps := range call.states {
		if ps.epoch == call.epochs[i] {
			byKey[ps.tp] = i
		}
	}
	s.mu.Unlock()
	for _, r := range call.res {
		i, ok := byKey[tpKey{*r.Topic, r.Partition}]
		if r.Error != nil || !ok {
			if r.Error != nil {
				s.st.commitErrors.Add(1)
				s.log.Warn("sluice/kafka: commit", "topic", *r.Topic, "partition", r.Partition, "offset", int64(r.Offset), "err", r.Error)
			}
			continue
		}
		ps := call.states[i]
		ps.committed, ps.committedMeta = int64(r.Offset), call.metas[i]
	}
	return true
}

// rebalancing reports whether the coordinator refused call (or one of its partitions) with
// REBALANCE_IN_PROGRESS.
func rebalancing(call *commitCall) bool {
	if ke, ok := call.err.(ckafka.Error); ok && ke.Code() == ckafka.ErrRebalanceInProgress {
		return true
	}
	for _, r := range call.res {
		if ke, ok := r.Error.(ckafka.Error); ok && ke.Code() == ckafka.ErrRebalanceInProgress {
			return true
		}
	}
	return false
}

// endCommit waits, without a bound, for the outstanding commit to be answered and its
// goroutine to end, and applies its result. Close calls it before closing the consumer, whose
// close would wait for the answer anyway.
func (s *Source) endCommit() {
	if s.inCommit == nil {
		return
	}
	start := time.Now()
	s.log.Warn("sluice/kafka: waiting for the coordinator to answer an outstanding commit before closing the consumer (librdkafka's close waits for it)", "offsets", offList(s.inCommit.offs))
	<-s.inCommit.done
	s.reapCommit()
	s.log.Info("sluice/kafka: outstanding commit answered", "waited", time.Since(start))
}

// offList names each partition and offset of offs, for logs.
func offList(offs []ckafka.TopicPartition) []string {
	out := make([]string, len(offs))
	for i, tp := range offs {
		out[i] = tp.String()
	}
	return out
}
