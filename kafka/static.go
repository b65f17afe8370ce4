package kafka

import (
	"context"
	"fmt"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Static membership (Config.GroupInstanceID). A dynamic member leaves the group before
// closing (Source.leaveGroup): closing the consumer in the middle of a cooperative rebalance
// can hang librdkafka (confluentinc/librdkafka#4527), leaving first does not. A static member
// must not leave: leaving gives its partitions away and rebalances the group, which is what
// static membership avoids (librdkafka itself sends no LeaveGroup when a static member
// closes). Its protection is a bound instead: closeClient waits for librdkafka's close only
// until Close's context ends; a close still running then finishes on its goroutine (the same
// exception as the background close of an unanswered commit, see Source.Close), and Close
// returns an error saying so.
//
// Two live members with one instance id (a misconfigured deployment): the coordinator fences
// the older one, and librdkafka raises a fatal FENCED_INSTANCE_ID error on it, which stops
// Run (onFatal). Such a consumer is never closed (abandon): librdkafka refuses to close a
// consumer that raised a fatal error (rd_kafka_consumer_close returns __FATAL and closes
// nothing) and confluent-kafka-go's Close ignores the refusal and waits for ever for the close
// to finish (v2.11.1), so a close would only leave a goroutine polling for ever.

// closeClient closes the librdkafka consumer: directly for a dynamic member (it left the
// group already), bounded by ctx for a static one.
func (s *Source) closeClient(ctx context.Context) error {
	if s.cfg.GroupInstanceID == "" {
		return s.c.Close()
	}
	done := make(chan error, 1)
	go func() { done <- s.c.Close() }() // serves the revoke callback (s.closing: no wait, no commit)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		s.log.Error("sluice/kafka: the static member's consumer did not close in time: it finishes closing in the background", "group_instance_id", s.cfg.GroupInstanceID, "err", context.Cause(ctx))
		go func() {
			if err := <-done; err != nil {
				s.log.Error("sluice/kafka: background close", "err", err)
			}
		}()
		return fmt.Errorf("the static member %q did not close within the close timeout (it finishes in the background): %w", s.cfg.GroupInstanceID, context.Cause(ctx))
	}
}

// onFatal records a fatal error the consumer raised and returns the error that stops Run,
// wrapping it. Polling goroutine.
func (s *Source) onFatal(e ckafka.Error) error {
	s.fatal = e
	if e.Code() == ckafka.ErrFencedInstanceID {
		return fmt.Errorf("kafka: consumer of %v in group %q fenced: another consumer joined the group with the same group.instance.id %q (Config.GroupInstanceID: every process needs its own); this one stops: %w", s.cfg.Topics, s.cfg.GroupID, s.cfg.GroupInstanceID, e)
	}
	return fmt.Errorf("kafka: fatal consumer error: %w", e)
}

// abandon is closeConsumer for a consumer that raised a fatal error: it neither leaves the
// group nor closes the consumer (a fenced member's requests are refused, and the close
// never ends: see above). Its librdkafka handle (threads, connections, memory) stays until the
// process exits, and with ForwardLogs so does confluent-kafka-go's log goroutine; Close says
// so in its error. It does not block.
func (s *Source) abandon() {
	err := fmt.Errorf("kafka: close: the consumer is left unclosed after its fatal error (librdkafka refuses to close it, and confluent-kafka-go's Close would wait for ever): its librdkafka handle is released when the process exits: %w", s.fatal)
	s.log.Error("sluice/kafka: consumer left unclosed after a fatal error", "group_instance_id", s.cfg.GroupInstanceID, "err", s.fatal)
	if s.closeErr == nil {
		s.closeErr = err
	}
	s.drainLogs()
}
