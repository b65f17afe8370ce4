package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/stage"
)

// Record is a message to produce. Topic defaults to ProducerConfig.Topic; the partition is
// chosen by librdkafka's partitioner from Key.
type Record struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers []stage.Header
}

// ErrProducerClosed is returned (wrapped) by a produce or a dead letter attempted after the
// Producer's Close stopped accepting records. It is permanent.
var ErrProducerClosed = errors.New("kafka: producer closed")

// Producer is one idempotent librdkafka producer (acks=all) for a pipeline, shared by its
// sink stage and its dead-letter handler whatever their concurrency. A delivery-report
// goroutine runs from NewProducer to Close; it never runs an error handler (a failed delivery
// is Nacked, and the pipeline handles it on its error-handling goroutine), so nothing it does
// can wait for a dead-letter topic.
//
// Ownership: the producer belongs to whoever created it (NewProducer, Source.NewProducer).
// The pipeline never closes it: its Sink stage only flushes its own records at the end of Run.
// Close it after Run returns (defer prod.Close(ctx)); until then it accepts records, so a
// dead-letter handler on it works through the whole close phase.
type Producer struct {
	cfg         ProducerConfig
	p           *ckafka.Producer
	log         *slog.Logger
	logs        chan ckafka.LogEvent
	reader      sync.WaitGroup
	delivered   chan struct{} // capacity 1: a delivery report arrived (room in the queue)
	outstanding atomic.Int64  // produced by a sink, delivery report not yet handled
	closeOnce   sync.Once
	closeErr    error

	// mu orders every call into librdkafka made outside Close (Produce, GetFatalError) against
	// Close: the callers hold it shared for the call only (never while waiting for room in a
	// full queue), Close takes it to move state on. Once Close stopped accepting records no
	// Produce is made, and once it destroys the client no call at all.
	mu    sync.RWMutex
	state int // open, closing (Produce refused), destroyed (no call into librdkafka)

	queueFull, deliveryErrors, deadLetters atomic.Uint64

	// denied is set (once) by the report reader when the cluster refuses the producer itself
	// (authentication, or cluster authorization for the idempotent producer): from then on a
	// produce fails at once and queued records fail with it (see refuse).
	denied atomic.Pointer[error]

	tx *txnSide // a transactional producer's link to its source (txnbuild.go); nil otherwise
}

// Producer states (Producer.state).
const (
	stateOpen = iota
	stateClosing
	stateDestroyed
)

// readReports handles delivery reports: each ends its message's Done, without blocking (a
// failure is Nacked: its error handler runs on the pipeline's error-handling goroutine). It
// runs until the producer is closed. A failure wraps stage.ErrNotDelivered: the record was not
// written, so its input must not be committed unless an error handler took it over.
func (p *Producer) readReports() {
	defer p.reader.Done()
	var handshakes handshakes
	for e := range p.p.Events() {
		switch ev := e.(type) {
		case *ckafka.Message:
			rec, _ := ev.Opaque.(*sinkRecord) // dead letters have their own report channel
			done, err := rec.done, ev.TopicPartition.Error
			switch {
			case err == nil:
				handshakes.reset() // delivered: connected
				done.Ack()
			case accessDenied(err):
				// Every record to this topic fails the same way until someone changes the ACLs:
				// stop the pipeline whatever its policy, rather than dead-letter them all.
				p.deliveryErrors.Add(1)
				done.Fail(fmt.Errorf("kafka: deliver to %s: %w: %w: %s: %w", ev.TopicPartition, stage.ErrNotDelivered, ErrAccessDenied, deniedHint(codeOf(err)), err))
			case isPurged(err) && p.deniedErr() != nil: // purged by refuse
				p.deliveryErrors.Add(1)
				done.Fail(fmt.Errorf("kafka: deliver to %s: %w: %w", ev.TopicPartition, stage.ErrNotDelivered, p.deniedErr()))
			case isPurged(err):
				done.Abandon()
			case p.tx != nil: // in a transaction: abort it, or stop when fatal
				p.deliveryErrors.Add(1)
				p.reportFailed(done, ev.TopicPartition, err)
			case isFatal(err) || p.fatalError() != nil:
				// A fatal producer error: librdkafka fails every later record too, so stop the
				// pipeline instead of letting a skip or dead-letter policy commit records that
				// were never written. The batch that caused it carries the broker's error
				// (OUT_OF_ORDER_SEQUENCE_NUMBER, say), not ErrFatal: the producer's state tells.
				p.deliveryErrors.Add(1)
				done.Fail(fmt.Errorf("kafka: deliver to %s: fatal producer error: %w: %w", ev.TopicPartition, stage.ErrNotDelivered, err))
			default:
				p.deliveryErrors.Add(1)
				done.Nack(fmt.Errorf("kafka: deliver to %s: %w: %w", ev.TopicPartition, stage.ErrNotDelivered, err))
			}
			p.outstanding.Add(-1)
			rec.sink.delivered() // after done ended: the sink's flush waits for that
			select {
			case p.delivered <- struct{}{}:
			default:
			}
		case ckafka.Error:
			p.log.Warn("sluice/kafka: producer error", "code", ev.Code().String(), "fatal", ev.IsFatal(), "err", ev)
			switch {
			case accessDenied(ev) && ev.Code() != ckafka.ErrTopicAuthorizationFailed: // a topic's refusal fails its records' reports
				p.refuse(ev, deniedHint(ev.Code()))
			default:
				if hint, ok := handshakes.refused(ev); ok {
					p.refuse(ev, hint)
				}
			}
		}
		p.drainLogs()
	}
}

// refuse records that the cluster refused the producer (the first refusal is kept) and purges
// its queue: librdkafka would keep the records until message.timeout.ms (5 minutes by
// default) while it retries the connection, a silent wait. The purged records' reports fail
// their events with the refusal; later produces fail at once.
func (p *Producer) refuse(e ckafka.Error, hint string) {
	err := fmt.Errorf("kafka: producer: %w: %s: %w", ErrAccessDenied, hint, e)
	if !p.denied.CompareAndSwap(nil, &err) {
		return
	}
	p.log.Error("sluice/kafka: the cluster refused the producer: failing its records", "err", err)
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.state != stateDestroyed {
		if perr := p.p.Purge(ckafka.PurgeQueue | ckafka.PurgeInFlight); perr != nil {
			p.log.Warn("sluice/kafka: purge after refusal", "err", perr)
		}
	}
}

// deniedErr returns the refusal refuse recorded, or nil.
func (p *Producer) deniedErr() error {
	if e := p.denied.Load(); e != nil {
		return *e
	}
	return nil
}

func codeOf(err error) ckafka.ErrorCode {
	var ke ckafka.Error
	if errors.As(err, &ke) {
		return ke.Code()
	}
	return ckafka.ErrUnknown
}

// isFatal reports whether err is (or follows) a fatal producer error: the producer can
// deliver nothing more.
func isFatal(err error) bool {
	var ke ckafka.Error
	return errors.As(err, &ke) && (ke.IsFatal() || ke.Code() == ckafka.ErrFatal)
}

// fatalError returns librdkafka's fatal error of the producer, or nil (also once Close
// destroys the client).
func (p *Producer) fatalError() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.state == stateDestroyed {
		return nil
	}
	return p.p.GetFatalError()
}

func isPurged(err error) bool {
	var ke ckafka.Error
	return errors.As(err, &ke) && (ke.Code() == ckafka.ErrPurgeQueue || ke.Code() == ckafka.ErrPurgeInflight)
}

func (p *Producer) message(rec Record, opaque any) *ckafka.Message {
	topic := rec.Topic
	if topic == "" {
		topic = p.cfg.Topic
	}
	m := &ckafka.Message{
		TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny},
		Key:            rec.Key, Value: rec.Value, Opaque: opaque,
	}
	for _, h := range rec.Headers {
		m.Headers = append(m.Headers, ckafka.Header{Key: h.Key, Value: h.Value})
	}
	return m
}

// produce hands m to librdkafka with deliveryChan (nil: the shared report reader). When the
// queue is full it waits for delivery reports (backpressure), never drops and never spins,
// until ctx is done. After Close began it returns ErrProducerClosed (permanent) without
// calling into librdkafka.
func (p *Producer) produce(ctx context.Context, m *ckafka.Message, deliveryChan chan ckafka.Event) error {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.deniedErr(); err != nil {
			return err
		}
		p.mu.RLock()
		if p.state != stateOpen {
			p.mu.RUnlock()
			return ErrProducerClosed
		}
		err := p.p.Produce(m, deliveryChan)
		p.mu.RUnlock()
		var ke ckafka.Error
		if err == nil || !errors.As(err, &ke) || ke.Code() != ckafka.ErrQueueFull {
			return err
		}
		p.queueFull.Add(1)
		if t == nil {
			t = time.NewTimer(50 * time.Millisecond)
		} else {
			t.Reset(50 * time.Millisecond)
		}
		select {
		case <-p.delivered: // a report freed room
		case <-t.C: // reports sent to another channel (dead letters) free room too
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close flushes (within FlushTimeout, or ctx), then stops accepting records (a produce or a
// dead letter from then on fails with ErrProducerClosed), purges what is left (those events
// are not committed), waits for every delivery report and closes the producer. A dead letter
// produced during the flush is flushed with the rest. Idempotent.
//
// The caller closes the producer it created, once nothing produces through it: after the Run
// of every pipeline whose sink or dead-letter handler uses it (closing it earlier fails their
// records with ErrProducerClosed). Blocking: at most FlushTimeout or ctx's time, plus the wait
// for the purged records' reports.
func (p *Producer) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		deadline := time.Now().Add(p.cfg.FlushTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		for p.p.Flush(100) > 0 && time.Now().Before(deadline) {
		}
		p.setState(stateClosing)
		if n := p.p.Len(); n > 0 {
			p.log.Warn("sluice/kafka: flush timeout: purging undelivered messages (their events are not committed)", "messages", n)
			if err := p.p.Purge(ckafka.PurgeQueue | ckafka.PurgeInFlight); err != nil {
				p.closeErr = fmt.Errorf("kafka: purge: %w", err)
			}
			p.p.Flush(int(min(time.Second, max(time.Until(deadline), 100*time.Millisecond)) / time.Millisecond)) // serve the purge reports
		}
		p.setState(stateDestroyed)
		p.p.Close() // closes Events(): the reader ends after the last report
		p.reader.Wait()
		if p.tx != nil {
			txnSinks.Range(func(k, v any) bool {
				if v == p {
					txnSinks.Delete(k)
				}
				return true
			})
		}
		if n := p.outstanding.Load(); n != 0 && p.closeErr == nil {
			p.closeErr = fmt.Errorf("kafka: %d delivery report(s) missing at close", n)
		}
	})
	return p.closeErr
}

// setState moves the producer's state on, once no call that the old state allowed is running.
func (p *Producer) setState(st int) {
	p.mu.Lock()
	p.state = st
	p.mu.Unlock()
}

// ProducerStats are a Producer's counters.
type ProducerStats struct {
	Outstanding    int64  // produced, delivery report pending
	QueueFull      uint64 // times Produce met a full queue and waited
	DeliveryErrors uint64 // failed delivery reports
	DeadLetters    uint64 // records produced to the dead-letter topic
}

// Stats returns the producer's counters.
func (p *Producer) Stats() ProducerStats {
	return ProducerStats{Outstanding: p.outstanding.Load(), QueueFull: p.queueFull.Load(), DeliveryErrors: p.deliveryErrors.Load(), DeadLetters: p.deadLetters.Load()}
}
