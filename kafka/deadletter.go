package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/stage"
)

// Headers a dead-lettered record carries, besides the original record's own headers.
const (
	HeaderError     = "sluice.error"
	HeaderStage     = "sluice.stage"
	HeaderAttempts  = "sluice.attempts"
	HeaderTopic     = "sluice.topic"
	HeaderPartition = "sluice.partition"
	HeaderOffset    = "sluice.offset"
)

// DeadLetter returns an error handler (for pipeline.WithErrorHandler) that produces every
// source event behind a failure to topic, with the event's key, value and headers (the record's own
// unless a stage replaced them) plus
// headers naming the error, the stage and the original topic/partition/offset (Event.Origin), and waits for
// the delivery. Only then does the event complete (and get committed), so a poison message
// never blocks its partition and is never lost. That includes a failure wrapping
// stage.ErrNotDelivered (a sink's output record was not written): the input goes to the
// dead-letter topic, and is committed once it is there.
//
// A record the broker can never accept (too large, invalid), a fatal producer error, a
// refusal by the cluster (no ACL to write the dead-letter topic, a failed authentication:
// ErrAccessDenied), or a producer whose Close stopped accepting records (ErrProducerClosed) is
// a fatal error at once: retrying would block its partition forever.
//
// A dead-letter topic that is unavailable is retried with backoff until it accepts the record
// or ctx ends: the pipeline slows down (backpressure) instead of losing the event. Every wait
// (room in the producer queue, the delivery report, the backoff) ends with ctx, which the
// pipeline cancels on a hard stop and when its close phase gives up: the handler then returns
// the error, which is fatal; the event is not committed and is consumed again after a restart.
func (p *Producer) DeadLetter(topic string) func(ctx context.Context, f *stage.Failure) error {
	return func(ctx context.Context, f *stage.Failure) error {
		if p.tx != nil {
			if err := p.ownsFailure(f); err != nil {
				return err
			}
		}
		for _, ev := range f.Events {
			if err := p.deadLetter(ctx, topic, f, ev); err != nil {
				return err
			}
		}
		return nil
	}
}

func (p *Producer) deadLetter(ctx context.Context, topic string, f *stage.Failure, ev *stage.Event) error {
	rec := Record{Topic: topic, Key: ev.Key, Value: ev.Value}
	from := ev.Origin() // where the record came from, whatever a stage did to the event's fields
	rec.Headers = append(rec.Headers, ev.Headers...)
	rec.Headers = append(rec.Headers,
		stage.Header{Key: HeaderError, Value: []byte(f.Err.Error())},
		stage.Header{Key: HeaderStage, Value: []byte(f.Stage)},
		stage.Header{Key: HeaderAttempts, Value: []byte(strconv.Itoa(f.Attempts))},
		stage.Header{Key: HeaderTopic, Value: []byte(from.Topic)},
		stage.Header{Key: HeaderPartition, Value: []byte(strconv.Itoa(int(from.Partition)))},
		stage.Header{Key: HeaderOffset, Value: []byte(strconv.FormatInt(from.Offset, 10))},
	)
	// One report at most is ever pending on reports: each attempt waits for its own, or
	// returns (ctx done), and the channel's buffer takes the late one.
	reports := make(chan ckafka.Event, 1)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := p.produce(ctx, p.message(rec, nil), reports)
		if err == nil {
			select {
			case e := <-reports:
				if m, ok := e.(*ckafka.Message); ok && m.TopicPartition.Error == nil {
					p.deadLetters.Add(1)
					return nil
				} else if ok {
					err = m.TopicPartition.Error
					if p.tx != nil && !isFatal(err) && !accessDenied(err) {
						// A record of the open transaction was not written: the transaction
						// must abort, as for the sink's records (reportFailed), and this input
						// is consumed again; retrying the dead letter in it cannot help.
						p.tx.doomWith(err)
					}
				}
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		if accessDenied(err) && !errors.Is(err, ErrAccessDenied) {
			return fmt.Errorf("kafka: dead letter to %s of %s[%d]@%d: %w: %s: %w", topic, from.Topic, from.Partition, from.Offset, ErrAccessDenied, deniedHint(codeOf(err)), err)
		}
		if p.doomedBy(err) {
			return nil // the transaction aborts: this input is consumed again (txnbuild.go)
		}
		if ctx.Err() != nil || permanent(err) || p.fatalError() != nil {
			return fmt.Errorf("kafka: dead letter to %s of %s[%d]@%d: %w", topic, from.Topic, from.Partition, from.Offset, err)
		}
		p.log.Warn("sluice/kafka: dead-letter produce failed, retrying", "topic", topic, "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done(): // the next attempt returns ctx's error without producing
			t.Stop()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// permanent reports whether a produce error can never succeed on retry.
func permanent(err error) bool {
	if errors.Is(err, ErrProducerClosed) || errors.Is(err, ErrAccessDenied) {
		return true
	}
	var ke ckafka.Error
	if !errors.As(err, &ke) {
		return false
	}
	if isFatal(err) {
		return true
	}
	switch ke.Code() {
	case ckafka.ErrMsgSizeTooLarge, ckafka.ErrInvalidMsgSize, ckafka.ErrInvalidMsg, ckafka.ErrRecordListTooLarge, ckafka.ErrTopicException:
		return true
	}
	return false
}
