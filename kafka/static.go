package kafka

import (
	"context"
	"fmt"
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
