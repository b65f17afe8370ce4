package faulttest

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka/kafkatest"
)

// faultWhileConsuming consumes n records from a 4-partition topic, injecting the faults once
// a quarter has been processed; every record must come out and commits must reach the end.
func faultWhileConsuming(t *testing.T, brokers int, inject func(c *kafkatest.Cluster)) *run {
	t.Helper()
	const n, parts = 2000, 4
	cl := kafkatest.StartT(t, kafkatest.Brokers(brokers), kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 4})
	kafkatest.WaitFor(t, 30*time.Second, "a quarter processed", func() bool { return s.distinct() >= n/4 })
	inject(cl)
	kafkatest.WaitFor(t, 60*time.Second, "all processed", func() bool { return s.distinct() == n })
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestFaultCommitErrors: the coordinator refuses commits for a while (COORDINATOR_NOT_AVAILABLE,
// then NOT_COORDINATOR); commits are retried at the next interval and nothing is lost.
func TestFaultCommitErrors(t *testing.T) {
	r := faultWhileConsuming(t, 1, func(c *kafkatest.Cluster) {
		c.Kfake().Fault(
			kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.CoordinatorNotAvailable, Count: 3},
			kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.NotCoordinator, Count: 3},
		)
	})
	if st := r.src.Stats(); st.Commits == 0 {
		t.Fatalf("no successful commit: %+v", st)
	}
}

// TestFaultFetchErrors: fetches fail with retriable errors; librdkafka refetches, nothing lost.
func TestFaultFetchErrors(t *testing.T) {
	faultWhileConsuming(t, 1, func(c *kafkatest.Cluster) {
		c.Kfake().Fault(
			kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: "in", Err: kerr.NotLeaderForPartition, Count: 5},
			kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: "in", Err: kerr.UnknownServerError, Count: 3},
		)
	})
}

// TestFaultPartitionLeaderMoved: with three brokers, partition leaders move mid-stream.
func TestFaultPartitionLeaderMoved(t *testing.T) {
	faultWhileConsuming(t, 3, func(c *kafkatest.Cluster) {
		k := c.Kfake()
		if err := k.MoveTopicPartition("in", 0, (k.LeaderFor("in", 0)+1)%3); err != nil {
			t.Fatal(err)
		}
		k.ShufflePartitionLeaders()
	})
}

// TestFaultCoordinatorMoved: the group coordinator moves to another broker mid-stream.
func TestFaultCoordinatorMoved(t *testing.T) {
	faultWhileConsuming(t, 3, func(c *kafkatest.Cluster) {
		c.Kfake().RehashCoordinators()
	})
}

// TestFaultSlowBroker: fetch responses are delayed (the broker answers slowly); the pipeline
// keeps going and loses nothing.
func TestFaultSlowBroker(t *testing.T) {
	faultWhileConsuming(t, 1, func(c *kafkatest.Cluster) {
		k := c.Kfake()
		delayed := 0
		k.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
			k.KeepControl()
			if delayed < 5 {
				delayed++
				k.SleepControl(func() { time.Sleep(300 * time.Millisecond) })
			}
			return nil, nil, false
		})
	})
}
