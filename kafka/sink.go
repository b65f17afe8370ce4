package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/internal/ext"
	"github.com/sluicehq/sluice/stage"
)

// sink is one Sink stage's share of the producer: its records produced whose delivery report
// has not ended their Done yet, which the stage's close hook waits for.
type sink struct {
	outstanding atomic.Int64
	idle        chan struct{} // capacity 1: outstanding went down to zero
}

// sinkRecord is the opaque of a record a sink produced: the delivery report ends done, then
// counts the record off its sink.
type sinkRecord struct {
	done stage.Done
	sink *sink
}

// delivered counts one record off the sink, after its Done ended.
func (s *sink) delivered() {
	if s.outstanding.Add(-1) == 0 {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
}

// Sink returns the producing sink stage: each Record is produced and its events complete only
// when the delivery report succeeds. A failed delivery (after librdkafka's own retries; for
// instance message.timeout.ms expired during an output outage), like a produce that fails at
// once, wraps stage.ErrNotDelivered and goes through the stage's error policy: the default
// error handler stops the pipeline with it and DeadLetter writes the input to the dead-letter
// topic, so the input is committed only once the record was written somewhere. A fatal
// producer error (librdkafka raises one when idempotence can no longer be guaranteed, and the
// producer then delivers nothing more) stops the pipeline with that error, whatever the
// policy, and its events are not committed.
//
// At the end of the pipeline's Run the stage flushes: its close hook waits, within the
// pipeline's close timeout, until every record the stage produced was delivered or failed and
// its event finished. It does not close the producer, which keeps accepting records (a
// DeadLetter handler on the same producer still works after it): the producer belongs to
// whoever created it, who closes it after Run. Records still awaiting their delivery report at
// the close deadline make the hook return an error; their events are not committed unless the
// report arrives before the source's final commit, and Close purges what is left.
//
// When the pipeline is traced (kafka/kotel's option), each record also carries the context of
// its sink call's span in its headers (traceparent, tracestate: the propagator's keys),
// replacing headers of those keys the Record already had. Otherwise the headers are the
// Record's.
func (p *Producer) Sink(name string, opts ...stage.Option) *stage.Stage[Record, stage.None] {
	s := &sink{idle: make(chan struct{}, 1)}
	st := stage.AsyncSink(name, func(ctx context.Context, rec Record, done stage.Done) error {
		p.outstanding.Add(1)
		s.outstanding.Add(1)
		m := p.message(rec, &sinkRecord{done: done, sink: s})
		if inj := ext.InjectorOf(ctx); inj != nil {
			injectHeaders(ctx, inj, m)
		}
		if err := p.produce(ctx, m, nil); err != nil {
			p.outstanding.Add(-1)
			s.outstanding.Add(-1) // no wake-up needed: flush runs once the workers exited
			if p.tx != nil && ctx.Err() == nil && p.produceFailed(done, err) {
				return nil
			}
			if isFatal(err) {
				done.Fail(fmt.Errorf("kafka: produce: fatal producer error: %w: %w", stage.ErrNotDelivered, err))
				return nil
			}
			if errors.Is(err, ErrAccessDenied) {
				done.Fail(fmt.Errorf("kafka: produce: %w: %w", stage.ErrNotDelivered, err))
				return nil
			}
			return fmt.Errorf("kafka: produce: %w: %w", stage.ErrNotDelivered, err)
		}
		return nil
	}, append(opts[:len(opts):len(opts)], stage.WithClose(s.flush))...) // the flush is the sink's own: last, so it wins
	if p.tx != nil {
		txnSinks.Store(st, p) // for the Build check (txnbuild.go)
	}
	return st
}

// injectHeaders writes the trace context of ctx (the sink call's, when a tracing option is in
// use: kafka/kotel) into m's headers, replacing a header of the same key (a traceparent the
// stage copied from its input record names the input's context, not this call's). m's header
// slice is its own (Producer.message copies the record's).
func injectHeaders(ctx context.Context, inj ext.Injector, m *ckafka.Message) {
	inj(ctx, func(key, value string) {
		// Every header of that key goes, whatever its case (extraction matches keys case
		// insensitively: a stale "Traceparent" would win), then the call's context is added.
		kept := m.Headers[:0]
		for _, h := range m.Headers {
			if !strings.EqualFold(h.Key, key) {
				kept = append(kept, h)
			}
		}
		m.Headers = append(kept, ckafka.Header{Key: key, Value: []byte(value)})
	})
}

// flush waits until every record of the sink was delivered or failed and its Done ended, or
// ctx ends (then it returns an error counting the records still awaiting their report).
func (s *sink) flush(ctx context.Context) error {
	for {
		n := s.outstanding.Load()
		if n == 0 {
			return nil
		}
		select {
		case <-s.idle:
		case <-ctx.Done():
			return fmt.Errorf("kafka: flush: %d record(s) still awaiting their delivery report (their events are not committed before it arrives): %w", n, context.Cause(ctx))
		}
	}
}
