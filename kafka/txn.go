package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Exactly once (Config.ExactlyOnce): consume, transform and produce in one Kafka transaction.
//
// What a user writes (only the two fields and the producer's origin differ from at-least-once):
//
//	src, err := kafka.NewSource(kafka.Config{Brokers: b, GroupID: "orders", Topics: []string{"orders"},
//		ExactlyOnce: true, TransactionalID: "orders-" + podName}) // one id per process instance, stable across restarts
//	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "orders-out"}) // the source's one transactional producer
//	defer prod.Close(context.Background())
//	b := pipeline.New(src, pipeline.WithErrorHandler(prod.DeadLetter("orders-dlq")))
//	pipeline.To(pipeline.Then(b.Source(), transform), prod.Sink("produce"))
//	p, err := b.Build()
//	err = p.Run(ctx)
//
// The outputs written by the producer's Sink and DeadLetter, and the offsets of the inputs
// they came from, commit in one transaction, or neither does: a read_committed reader of the
// outputs sees each input's outputs exactly once, whatever crashes, rebalances or aborts happen.
// Side effects outside Kafka (a stage calling a service) are not covered: they happen again for
// the inputs of an aborted transaction.
//
// Refused at construction, each with an error wrapping ErrConfig (so pipeline.ErrInvalid) that
// names the field: NewSource with ExactlyOnce and no TransactionalID or no GroupID, with
// TransactionalID but not ExactlyOnce, with isolation.level other than read_committed, or
// with enable.auto.commit / enable.auto.offset.store true; Source.NewProducer of an
// ExactlyOnce source called twice, or with transactional.id in Overrides, acks other than
// all or enable.idempotence false; kafka.NewProducer with transactional.id (a transactional
// producer is made by its source only); and at Build (txnbuild.go) an ExactlyOnce source whose
// pipeline's sink is not its transactional producer's Sink, or a transactional producer's Sink
// in the pipeline of another source (an at-least-once one, or a second pipeline sharing the
// producer). A dead-letter handler is a function Build cannot inspect: the transactional
// producer's DeadLetter used by another source's pipeline stops that pipeline with ErrConfig at
// its first dead letter.
//
// How (the source's polling goroutine drives the transaction; txn*.go):
//   - Run begins with InitTransactions (which fences an older instance with the same
//     TransactionalID and aborts its open transaction) and BeginTransaction.
//   - Barrier, every CommitInterval (DefaultTxnCommitInterval) once something was emitted: each
//     assigned partition's mark is its highest offset admitted for emission; messages above it
//     are held, not emitted, while those up to it (held for a busy key) are still emitted. Poll
//     runs only every barrierPoll (rebalances, errors): in between the loop waits for
//     completions, so the records fetched meanwhile stay in librdkafka's bounded prefetch
//     instead of being held, which would pause partitions and discard and refetch that
//     prefetch (txn_wait.go). Once no event is in flight on any partition (the Sink completes
//     an event on its delivery report) and none up to a mark is held, each partition's
//     finished offsets are a contiguous prefix: SendOffsetsToTransaction (with the consumer group metadata: EOS v2, and the commit
//     metadata when CommitMetadataMaxBytes is on), CommitTransaction, BeginTransaction. A stuck
//     event holds the barrier as it would hold the commit: stage timeouts and the error path bound it.
//   - Failure: a delivery or produce error in the transaction (not fatal) abandons its event (not
//     committed, no error handler) and dooms the transaction. Emission stops, the events in flight
//     finish, the transaction aborts, and every assigned partition seeks back to its committed
//     offset as a new offset sequence (a new epoch, as restartSeq: completions of the old one are
//     never committed); a new transaction begins once nothing is in flight, so no write of the
//     aborted one can land in it. TxnRequiresAbort on send or commit: the same. IsRetriable: the
//     call is retried (within RevokeTimeout). Fatal, such as fenced: Run stops with an error
//     (wrapping ErrFenced when fenced).
//   - Rebalance: a revoke drains like a barrier (within RevokeTimeout) and commits; when it
//     cannot (an event still running, a commit error) or the assignment was lost, it aborts and
//     rewinds the partitions kept. Newly assigned partitions start from the committed offsets
//     (read_committed: librdkafka waits for pending transactional offsets).
//   - Close (after the pipeline drained): commits if every partition's finished offsets are
//     covered exactly (contiguous, or listed in the commit metadata), else aborts.
//   - Memory: librdkafka keeps a record until its delivery report (acks=all), not until the
//     transaction commits, so the open transaction's records in this process are within the
//     producer queue share (queue.buffering.max.kbytes, see Plan), as at-least-once; delivered
//     ones wait in the brokers.

// ErrFenced is wrapped by the error that stops an exactly-once pipeline whose transactional
// producer was fenced: another instance initialised the same TransactionalID (a restarted
// instance, while this one was still running). This instance's open transaction was aborted
// and it writes nothing more; restarting it would fence the other one in turn.
var ErrFenced = errors.New("kafka: transactional producer fenced: another instance uses its transactional.id")

// txnState is an exactly-once source's side of its transaction. Owned by the polling goroutine
// (Run, its rebalance callbacks, then Close); admit reads it there too, under s.mu.
type txnState struct {
	p        *Producer            // the source's transactional producer (Source.NewProducer); nil until made
	began    bool                 // a transaction is open: events may be emitted
	emitted  bool                 // an event was admitted since it began: a barrier is due CommitInterval after the first
	first    time.Time            // when the first event of the transaction was admitted
	draining bool                 // at a barrier: only messages up to their partition's mark are emitted
	stopping bool                 // doomed: nothing is emitted until the abort
	marks    map[*partState]int64 // at a barrier: the highest offset each partition may emit
	top      map[*partState]int64 // each partition's highest offset admitted (an upper bound: see admitted)
	fatal    error                // a fatal error met in a rebalance callback: Run returns it
}

// checkTxn validates the exactly-once fields of c.
func (c *Config) checkTxn() []error {
	var errs []error
	if !c.ExactlyOnce {
		if c.TransactionalID != "" {
			errs = append(errs, configErr("TransactionalID (transactional.id)", "is set without ExactlyOnce: an at-least-once source has no transactional producer"))
		}
		return errs
	}
	if c.TransactionalID == "" {
		errs = append(errs, configErr("TransactionalID (transactional.id)", "is required with ExactlyOnce (one per process instance, stable across its restarts)"))
	} else if len(c.TransactionalID) > 249 {
		errs = append(errs, configErr("TransactionalID (transactional.id)", "must be at most 249 characters"))
	}
	if v, ok := c.Overrides["isolation.level"]; ok && fmt.Sprint(v) != "read_committed" {
		errs = append(errs, configErr("isolation.level", "must be read_committed with ExactlyOnce (an uncommitted input may be aborted), got %v", v))
	}
	if _, ok := c.Overrides["transactional.id"]; ok {
		errs = append(errs, configErr("transactional.id", "set it with Config.TransactionalID, not Overrides"))
	}
	return errs
}

// mayEmit reports whether m (offset off of ps) may be emitted now: a transaction is open and
// not doomed, and at a barrier off is up to ps's mark. Polling goroutine, under s.mu.
func (t *txnState) mayEmit(ps *partState, off int64) bool {
	switch {
	case !t.began || t.stopping:
		return false
	case t.draining:
		m, ok := t.marks[ps]
		return ok && off <= m
	}
	return true
}

// admitted records that ps's offset off was admitted for emission (if the pipeline then does
// not take it, the top stays: a barrier drains a little more than it needs). Polling
// goroutine, under s.mu.
func (t *txnState) admitted(ps *partState, off int64) {
	if !t.emitted {
		t.emitted, t.first = true, time.Now()
	}
	if t.top == nil {
		t.top = map[*partState]int64{}
	}
	if top, ok := t.top[ps]; !ok || off > top {
		t.top[ps] = off
	}
}

// txnStart initialises the transactional producer and begins the first transaction. Polling
// goroutine, at the start of Run.
func (s *Source) txnStart(ctx context.Context) error {
	t := s.txn
	if t.p == nil {
		return configErr("ExactlyOnce", "the source has no transactional producer: make it with src.NewProducer and end the pipeline with its Sink")
	}
	if err := s.txnCall(ctx, func(ctx context.Context, p *ckafka.Producer) error { return p.InitTransactions(ctx) }); err != nil {
		return s.txnErr("init transactions", err)
	}
	return s.txnBegin()
}

// txnTick is the poll loop's transaction step: it starts a barrier at CommitInterval, ends it
// with a commit once drained, and aborts a doomed transaction once nothing is in flight.
// Polling goroutine.
func (s *Source) txnTick(ctx context.Context) error {
	t := s.txn
	if t.fatal != nil {
		return t.fatal
	}
	if err := t.p.tx.doomErr(); err != nil && t.began && !t.stopping {
		t.stopping, t.draining = true, false
		s.log.Warn("sluice/kafka: the transaction failed: aborting it once the events in flight finished", "err", err)
	}
	switch {
	case !t.began: // aborted: begin once nothing of the old transaction is in flight
		if s.idleAll() {
			return s.txnBegin()
		}
	case t.stopping:
		s.flush(ctx) // the burst is held (nothing is emitted), then dropped by the rewind
		if s.idleAll() {
			return s.txnAbort(t.p.tx.doomErr(), true)
		}
	case !t.draining:
		// The interval runs from the transaction's first event (from its begin, after a pause
		// in the input, the first events would meet a barrier at once).
		if t.emitted && time.Since(t.first) < s.cfg.CommitInterval {
			return nil
		}
		if !t.emitted && (time.Since(s.lastCommit) < s.cfg.CommitInterval || !s.offsetsMoved()) {
			return nil
		}
		s.flush(ctx)
		s.startBarrier()
	default:
		s.flush(ctx) // what was collected since is above the marks: held
		if s.drained() {
			return s.txnCommit(s.assignedStates(), true)
		}
	}
	return nil
}

// startBarrier stops emission above each assigned partition's highest admitted offset (its
// mark): every finished offset is at most the mark, so once the held messages up to it were
// emitted and everything finished, the finished offsets are a contiguous prefix; messages above
// it (held, or received during the barrier) wait for the next transaction.
func (s *Source) startBarrier() {
	t := s.txn
	t.draining = true
	s.st.txnBarriers.Add(1)
	clear(t.marks)
	if t.marks == nil {
		t.marks = map[*partState]int64{}
	}
	for ps := range t.top {
		if s.parts[ps.tp] != ps { // let go
			delete(t.top, ps)
		}
	}
	for _, ps := range s.parts {
		if top, ok := t.top[ps]; ok {
			t.marks[ps] = top
		}
	}
}

// drained reports whether the barrier can commit: no event in flight on any partition (of any
// epoch) and no held message up to its partition's mark.
func (s *Source) drained() bool {
	for _, ps := range s.parts {
		if m, ok := s.txn.marks[ps]; ok && len(ps.held) > 0 && int64(ps.held[0].TopicPartition.Offset) <= m {
			return false
		}
	}
	return s.idleAll()
}

// idleAll reports whether no event is in flight, on any partition and epoch.
func (s *Source) idleAll() bool {
	if len(s.burst) > 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.gates {
		if g.inflight > 0 {
			return false
		}
	}
	return true
}

// offsetsMoved reports whether a partition's committable offset moved without an emission
// (offsets a previous owner finished, skipped through the commit metadata).
func (s *Source) offsetsMoved() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ps := range s.parts {
		if ps.tr.committable() > ps.committed {
			return true
		}
	}
	return false
}

// txnBegin begins the next transaction. Nothing is in flight: no write of an earlier
// transaction can land in it, and a doom recorded since the last abort is about that one.
func (s *Source) txnBegin() error {
	t := s.txn
	t.p.tx.clearDoom()
	if err := t.p.txnDo(func(p *ckafka.Producer) error { return p.BeginTransaction() }); err != nil {
		return s.txnErr("begin transaction", err)
	}
	t.began, t.emitted, t.draining, t.stopping = true, false, false, false
	s.lastCommit = time.Now()
	s.retrySeq = s.st.doneSeq.Load() - 1 // held messages go out now
	return nil
}

// txnCommit sends states' finished offsets and commits the transaction, then begins the next
// one if next. Nothing is in flight. If the finished offsets cannot be committed exactly
// (finished above a gap without commit metadata to list them, or more than it holds) or the
// commit fails, it aborts instead. It returns only fatal errors.
func (s *Source) txnCommit(states []*partState, next bool) error {
	t := s.txn
	offs, metas, moved, epochs, exact := s.txnOffsets(states)
	if !exact {
		return s.txnAbort(errors.New("finished offsets above an unfinished one that the commit metadata cannot list"), next)
	}
	if err := t.p.tx.doomErr(); err != nil {
		return s.txnAbort(err, next)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RevokeTimeout)
	defer cancel()
	var err error
	if len(offs) > 0 {
		md, merr := s.c.GetConsumerGroupMetadata()
		if merr != nil {
			return s.txnAbort(fmt.Errorf("consumer group metadata: %w", merr), next)
		}
		err = s.txnCall(ctx, func(ctx context.Context, p *ckafka.Producer) error { return p.SendOffsetsToTransaction(ctx, offs, md) })
	}
	if err == nil {
		err = s.txnCall(ctx, func(ctx context.Context, p *ckafka.Producer) error { return p.CommitTransaction(ctx) })
	}
	if err != nil {
		if s.txnFatal(err) {
			return s.txnErr("commit transaction", err)
		}
		return s.txnAbort(fmt.Errorf("commit: %w", err), next)
	}
	s.st.txnCommits.Add(1)
	s.st.commits.Add(1) // offsets committed, as at-least-once counts them (metrics)
	for i, ps := range moved {
		if ps.epoch == epochs[i] {
			ps.committed, ps.committedMeta = int64(offs[i].Offset), metas[i]
		}
	}
	t.began = false
	if !next {
		return nil
	}
	return s.txnBegin()
}

// txnAbort aborts the transaction (cause says why) and, if rewind, seeks every kept partition
// back to its committed offset. The next transaction begins once nothing is in flight
// (txnTick). It returns only fatal errors, and an abort that failed.
func (s *Source) txnAbort(cause error, rewind bool) error {
	t := s.txn
	s.log.Warn("sluice/kafka: aborting the transaction: the inputs since the last commit are consumed again", "cause", cause)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RevokeTimeout)
	defer cancel()
	if err := s.txnCall(ctx, func(ctx context.Context, p *ckafka.Producer) error { return p.AbortTransaction(ctx) }); err != nil {
		return s.txnErr("abort transaction", err)
	}
	s.st.txnAborts.Add(1)
	t.began, t.draining, t.stopping = false, false, false
	s.lastCommit = time.Now()
	if rewind {
		var kept []*partState
		for _, ps := range s.parts {
			if !ps.revoking {
				kept = append(kept, ps)
			}
		}
		s.rewind(kept)
	}
	return nil
}

// txnOffsets returns the offsets (with their commit metadata) to send for states, and
// whether they cover the finished offsets exactly.
func (s *Source) txnOffsets(states []*partState) (offs []ckafka.TopicPartition, metas []string, moved []*partState, epochs []uint64, exact bool) {
	exact = true
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ps := range states {
		next, meta, truncated := ps.tr.commitPoint(s.metaBuf, s.metaLimit)
		s.metaBuf = meta[:0]
		if truncated || (s.metaLimit == 0 && ps.tr.gapped()) {
			exact = false
		}
		if next < 0 {
			continue
		}
		tp := ckafka.TopicPartition{Topic: &ps.tp.topic, Partition: ps.tp.partition, Offset: ckafka.Offset(next)}
		if len(meta) > 0 {
			str := encodeMeta(meta)
			tp.Metadata = &str
		}
		offs, metas = append(offs, tp), append(metas, string(meta))
		moved, epochs = append(moved, ps), append(epochs, ps.epoch)
	}
	return offs, metas, moved, epochs, exact
}

// gapped reports whether an offset above the oldest unfinished one finished.
func (t *tracker) gapped() bool {
	for i := t.head + 1; i < len(t.offs); i++ {
		if t.done[i] {
			return true
		}
	}
	return false
}
