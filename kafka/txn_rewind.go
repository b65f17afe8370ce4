package kafka

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// The exactly-once source's failure paths (txn.go): the calls into the transactional
// producer, the rewind after an abort, and the transaction's end at a revoke and at Close.

// txnCall runs fn on the producer, calling it again while it fails with a retriable error and
// ctx allows (librdkafka: "IsRetriable: the call may be retried").
func (s *Source) txnCall(ctx context.Context, fn func(context.Context, *ckafka.Producer) error) error {
	for {
		err := s.txn.p.txnDo(func(p *ckafka.Producer) error { return fn(ctx, p) })
		var ke ckafka.Error
		if err == nil || !errors.As(err, &ke) || !ke.IsRetriable() || ke.IsFatal() || ke.TxnRequiresAbort() {
			return err
		}
		s.log.Warn("sluice/kafka: transactional call failed, retrying", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// txnFatal reports whether err (from a transactional call) leaves the producer unusable.
func (s *Source) txnFatal(err error) bool {
	return isFatal(err) || isFenced(err) || s.txn.p.fatalError() != nil
}

// txnErr wraps err from the transactional call what, naming the transactional id, and
// ErrFenced when another instance fenced the producer.
//
// The broker fences the producer too when it aborts a transaction open longer than the
// producer's transaction.timeout.ms (it bumps the epoch; librdkafka reports it as fenced): an
// event stuck at a barrier holds the transaction open. The error then says so, so that nobody
// looks for a second instance that does not exist.
func (s *Source) txnErr(what string, err error) error {
	if isFenced(err) || isFenced(s.txn.p.fatalError()) {
		if max := txnTimeout(s.txn.p.cfg); s.txn.began && time.Since(s.lastCommit) >= max {
			return fmt.Errorf("kafka: %s (transactional.id %q): %w, or the broker aborted the transaction: it had been open for %v, longer than the producer's transaction.timeout.ms (%v), such as an event stuck at a barrier (bound the stages with WithTimeout below it, or raise it in ProducerConfig.Overrides): %w",
				what, s.cfg.TransactionalID, ErrFenced, time.Since(s.lastCommit).Round(time.Millisecond), max, err)
		}
		return fmt.Errorf("kafka: %s (transactional.id %q): %w: %w", what, s.cfg.TransactionalID, ErrFenced, err)
	}
	return fmt.Errorf("kafka: %s (transactional.id %q): %w", what, s.cfg.TransactionalID, err)
}

// txnTimeout is cfg's transaction.timeout.ms (librdkafka's default: 60 s).
func txnTimeout(cfg ProducerConfig) time.Duration {
	if v, ok := cfg.Overrides["transaction.timeout.ms"]; ok {
		if ms, err := strconv.Atoi(fmt.Sprint(v)); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	return 60 * time.Second
}

// isFenced reports whether err says another producer took over the transactional id.
func isFenced(err error) bool {
	if err == nil {
		return false
	}
	switch codeOf(err) {
	case ckafka.ErrFenced, ckafka.ErrProducerFenced, ckafka.ErrInvalidProducerEpoch:
		return true
	}
	return false
}

// rewind seeks each of states back to its committed offset (the group's, read from the
// coordinator; without one, the first offset received since the assignment) as a new offset
// sequence: its held messages are dropped, its in-flight events (none: the caller waited) would
// never be committed, and the committed metadata's finished offsets are skipped again.
// Polling goroutine, after an abort.
func (s *Source) rewind(states []*partState) {
	if len(states) == 0 {
		return
	}
	ask := make([]ckafka.TopicPartition, len(states))
	for i, ps := range states {
		ask[i] = ckafka.TopicPartition{Topic: &ps.tp.topic, Partition: ps.tp.partition}
	}
	got, err := s.c.Committed(ask, int(s.cfg.RevokeTimeout/time.Millisecond))
	if err != nil {
		s.log.Warn("sluice/kafka: reading the committed offsets for the rewind failed: using the last ones this source committed", "err", err)
	}
	found := map[tpKey]ckafka.TopicPartition{}
	for _, tp := range got {
		if tp.Error == nil && tp.Offset >= 0 {
			found[tpKey{*tp.Topic, tp.Partition}] = tp
		}
	}
	for _, ps := range states {
		off, meta, committed := ps.txnBase, "", true
		if tp, ok := found[ps.tp]; ok {
			off = int64(tp.Offset)
			if tp.Metadata != nil {
				meta = *tp.Metadata
			}
		} else if ps.committed >= 0 {
			off, meta = ps.committed, encodeMeta([]byte(ps.committedMeta))
		} else {
			committed = false
		}
		s.letGo(s.c, ps) // drop held messages; resume if paused
		s.newSequence(ps)
		delete(s.txn.top, ps)
		ps.lastRecv, ps.txnBase = -1, -1
		if off < 0 {
			continue // nothing received since the assignment: nothing to go back to
		}
		if committed {
			ps.committed = off
		}
		if f, err := decodeMeta(meta, off); err == nil && f != nil {
			ps.skip = f
			ps.committedMeta = string(must64(meta))
		}
		tp := ckafka.TopicPartition{Topic: &ps.tp.topic, Partition: ps.tp.partition, Offset: ckafka.Offset(off)}
		if _, err := s.c.SeekPartitions([]ckafka.TopicPartition{tp}); err != nil {
			s.txn.fatal = fmt.Errorf("kafka: rewind %s after an abort: %w", tp, err)
		}
	}
	s.last = nil
	s.log.Info("sluice/kafka: partitions rewound to their committed offsets", "partitions", len(states))
}

// must64 decodes a metadata string decodeMeta accepted.
func must64(s string) []byte {
	b, _ := base64.RawStdEncoding.DecodeString(s)
	return b
}

// txnRevoke ends the transaction before states are let go: it drains like a barrier, within
// RevokeTimeout, and commits every assigned partition's finished offsets; when it cannot (an
// event still running, a commit error, a doomed transaction) or the assignment was lost, it
// aborts and rewinds the partitions kept. A fatal error is kept for Run. Polling goroutine
// (the revoke callback), before letGo.
func (s *Source) txnRevoke(lost bool) {
	t := s.txn
	if t.p == nil || !t.began || t.fatal != nil {
		return
	}
	var err error
	if lost || t.stopping || t.p.tx.doomErr() != nil {
		t.stopping = true
		s.flush(s.runCtx)
		err = s.txnAbort(fmt.Errorf("revoke (lost %v) of a doomed or lost transaction", lost), true)
	} else {
		s.startBarrier()
		deadline := time.Now().Add(s.cfg.RevokeTimeout)
		tick := time.NewTicker(2 * time.Millisecond)
		for !s.drained() && time.Now().Before(deadline) {
			s.retryHeld(s.runCtx)
			select {
			case <-s.revokeWake:
			case <-tick.C:
			}
		}
		tick.Stop()
		if s.drained() {
			err = s.txnCommit(s.assignedStates(), true)
		} else {
			s.st.revokeTimeouts.Add(1)
			err = s.txnAbort(errors.New("revoke timeout: events still in flight"), true)
		}
	}
	if err != nil {
		t.fatal = err
	}
}

// txnClose ends the transaction at Close, after the pipeline drained: it commits what finished
// if that is covered exactly, else aborts. Nothing is begun after it.
func (s *Source) txnClose() {
	t := s.txn
	if t.p == nil || !t.began || t.fatal != nil {
		return
	}
	var err error
	if t.stopping || t.p.tx.doomErr() != nil || !s.idleAll() {
		err = s.txnAbort(errors.New("closing with a doomed transaction or events in flight"), false)
	} else {
		err = s.txnCommit(s.assignedStates(), false)
	}
	if err != nil {
		s.log.Error("sluice/kafka: ending the transaction at close", "err", err)
		if s.closeErr == nil {
			s.closeErr = err
		}
	}
}
