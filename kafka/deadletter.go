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
// source event behind a failure to topic, with the original key, value and headers plus
// headers naming the error, the stage and the original topic/partition/offset, and waits for
// the delivery. Only then does the event complete (and get committed), so a poison message
// never blocks its partition and is never lost.
//
// A record the broker can never accept (too large, invalid), or a fatal producer error, is a
// fatal error at once: retrying would block its partition forever.
//
// A dead-letter topic that is unavailable is retried with backoff until it accepts the record
// or ctx (the pipeline's hard-stop context) ends: the pipeline slows down (backpressure)
// instead of losing the event. On a hard stop it returns the error, which is fatal: the event
// is not committed and is consumed again after a restart.
func (p *Producer) DeadLetter(topic string) func(ctx context.Context, f *stage.Failure) error {
	return func(ctx context.Context, f *stage.Failure) error {
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
	rec.Headers = append(rec.Headers, ev.Headers...)
	rec.Headers = append(rec.Headers,
		stage.Header{Key: HeaderError, Value: []byte(f.Err.Error())},
		stage.Header{Key: HeaderStage, Value: []byte(f.Stage)},
		stage.Header{Key: HeaderAttempts, Value: []byte(strconv.Itoa(f.Attempts))},
		stage.Header{Key: HeaderTopic, Value: []byte(ev.Topic)},
		stage.Header{Key: HeaderPartition, Value: []byte(strconv.Itoa(int(ev.Partition)))},
		stage.Header{Key: HeaderOffset, Value: []byte(strconv.FormatInt(ev.Offset, 10))},
	)
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
				}
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		if ctx.Err() != nil || permanent(err) || p.p.GetFatalError() != nil {
			return fmt.Errorf("kafka: dead letter to %s of %s[%d]@%d: %w", topic, ev.Topic, ev.Partition, ev.Offset, err)
		}
		p.log.Warn("sluice/kafka: dead-letter produce failed, retrying", "topic", topic, "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// permanent reports whether a produce error can never succeed on retry.
func permanent(err error) bool {
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
