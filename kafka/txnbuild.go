package kafka

import (
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/internal/ext"
	"github.com/sluicehq/sluice/stage"
)

// The transactional producer's side of exactly once (txn.go): how it is made and bound to its
// source, how its sink and dead-letter writes report a failed transaction, and the Build check
// that pairs it with its source's pipeline.

// txnSide is a transactional producer's link to its source and the failure of its open
// transaction. Set before the report reader starts, never changed.
type txnSide struct {
	src  *Source
	doom atomic.Pointer[error] // the first failed write of the open transaction (nil: none)
}

// doomWith records that a write of the open transaction failed: the source aborts it.
func (t *txnSide) doomWith(err error) { t.doom.CompareAndSwap(nil, &err) }

// doomErr returns the failure doomWith recorded, or nil.
func (t *txnSide) doomErr() error {
	if e := t.doom.Load(); e != nil {
		return *e
	}
	return nil
}

// clearDoom forgets the failure: the source calls it when it begins a transaction, with
// nothing in flight, so no report of an earlier transaction can come after.
func (t *txnSide) clearDoom() { t.doom.Store(nil) }

// txnDo runs fn on the librdkafka producer unless Close destroyed it. It holds the producer's
// lock shared: Close waits for the call (the transactional calls are bounded by their context).
func (p *Producer) txnDo(fn func(*ckafka.Producer) error) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.state == stateDestroyed {
		return ErrProducerClosed
	}
	return fn(p.p)
}

// reportFailed ends done for a record of the transaction whose delivery failed with err (not a
// purge nor an access refusal: those keep their handling). A fatal error (fenced: ErrFenced)
// stops the pipeline; any other dooms the transaction and abandons the event: it is not
// committed and needs no error handler, since the abort sends every input of the transaction
// through again.
func (p *Producer) reportFailed(done stage.Done, tp ckafka.TopicPartition, err error) {
	if fe := p.fatalError(); isFatal(err) || fe != nil {
		if isFenced(err) || isFenced(fe) {
			err = fmt.Errorf("%w: %w", ErrFenced, err)
		}
		done.Fail(fmt.Errorf("kafka: deliver to %s in a transaction: fatal producer error: %w: %w", tp, stage.ErrNotDelivered, err))
		return
	}
	p.tx.doomWith(err)
	done.Abandon()
}

// produceFailed handles a produce the transactional producer refused at once (err), and
// reports whether it ended done: fatal, or refused because the transaction is no longer open
// (doomed, or aborted while this event was in flight). Other refusals (a record too large)
// did not touch the transaction: the stage's error policy handles them as at-least-once.
func (p *Producer) produceFailed(done stage.Done, err error) bool {
	switch {
	case isFatal(err) || p.fatalError() != nil:
		p.reportFailed(done, ckafka.TopicPartition{}, err)
		return true
	case p.doomedBy(err):
		done.Abandon()
		return true
	}
	return false
}

// doomedBy reports whether a write (a record, or a dead letter) that failed with err, not
// fatally, belongs to a doomed transaction, dooming it if err is the refusal of a transaction
// no longer open. Its event counts as finished (a dead letter's handler returns nil), but the
// source aborts that transaction before any commit (CommitTransaction would fail anyway) and
// consumes every input of it again, this one included.
func (p *Producer) doomedBy(err error) bool {
	if p.tx == nil || isFatal(err) || p.fatalError() != nil {
		return false
	}
	if codeOf(err) == ckafka.ErrState || p.tx.doomErr() != nil {
		p.tx.doomWith(err)
		return true
	}
	return false
}

// ownsFailure checks that f's events are the producer's source's: a transactional producer's
// dead letters join its own source's transaction only.
func (p *Producer) ownsFailure(f *stage.Failure) error {
	s := p.tx.src
	for _, ev := range f.Events {
		o := ev.Origin()
		s.mu.Lock()
		ps := s.byEpoch[o.Tag]
		s.mu.Unlock()
		if ps == nil || ps.tp != (tpKey{o.Topic, o.Partition}) {
			return configErr("Producer.DeadLetter", "the transactional producer of the source of %v (TransactionalID %q) got a failure of another pipeline's event (%s[%d]@%d): a transactional producer serves its own source's pipeline only", s.cfg.Topics, s.cfg.TransactionalID, o.Topic, o.Partition, o.Offset)
		}
	}
	return nil
}

// txnSinks maps each Sink stage of a transactional producer to it, for the Build check. A
// producer's entries go at its Close.
var txnSinks sync.Map // *stage.Stage[Record, stage.None] → *Producer

// newTxnProducer makes the exactly-once source's one transactional producer (cfg has the
// source's values already).
func (s *Source) newTxnProducer(cfg ProducerConfig) (*Producer, error) {
	if s.txn.p != nil {
		return nil, configErr("Source.NewProducer", "the ExactlyOnce source has its transactional producer already: one per source (its Sink and DeadLetter serve one pipeline)")
	}
	if _, ok := cfg.Overrides["transactional.id"]; ok {
		return nil, configErr("ProducerConfig.Overrides[transactional.id]", "the source's Config.TransactionalID is used: do not set it here")
	}
	cfg.Overrides = maps.Clone(cfg.Overrides)
	if cfg.Overrides == nil {
		cfg.Overrides = map[string]any{}
	}
	cfg.Overrides["transactional.id"] = s.cfg.TransactionalID
	p, err := newProducer(cfg, &txnSide{src: s})
	if err != nil {
		return nil, err
	}
	s.txn.p = p
	return p, nil
}

func init() { ext.CheckBuild = checkBuild }

// checkBuild is pipeline.Build's check of exactly-once pairings: an ExactlyOnce source's
// pipeline must end in its transactional producer's Sink, and a transactional producer's Sink
// must be in its own source's pipeline.
func checkBuild(src any, stages []any) error {
	s, _ := src.(*Source)
	var errs []error
	own := false
	for _, st := range stages {
		v, ok := txnSinks.Load(st)
		if !ok {
			continue
		}
		p := v.(*Producer)
		if s == nil || p.tx.src != s {
			name := st.(*stage.Stage[Record, stage.None]).Name()
			errs = append(errs, configErr("Source.NewProducer (transactional)", "stage %q is a Sink of the transactional producer of the source of %v (TransactionalID %q), in a pipeline of another source: a transactional producer serves its own source's pipeline only", name, p.tx.src.cfg.Topics, p.tx.src.cfg.TransactionalID))
			continue
		}
		own = true
	}
	if s != nil && s.txn != nil && !own {
		errs = append(errs, configErr("ExactlyOnce", "the pipeline of an ExactlyOnce source (TransactionalID %q) must end in a Sink of that source's transactional producer (src.NewProducer): another sink's writes are not in the transaction", s.cfg.TransactionalID))
	}
	return errors.Join(errs...)
}
