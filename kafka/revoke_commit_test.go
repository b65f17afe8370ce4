package kafka_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
)

// TestFaultRevokeCommitRebalanceInProgress: member A finished all 100 records of each of two
// partitions and committed none (its commit interval is an hour). Member B joins; A's revoke
// commits the partition that moves, and the coordinator refuses that commit once with
// REBALANCE_IN_PROGRESS (what Kafka answers while the group waits for its leader's
// assignment). A tries again within RevokeTimeout, so B starts from the end of the moved
// partition and processes none of its records again. (In the chaos soak, most duplicates left
// once commit metadata was on came from this refusal.)
func TestFaultRevokeCommitRebalanceInProgress(t *testing.T) {
	const n, parts = 100, 2
	cl := startCluster(t, kafkatest.Topic("in", parts))
	for p := range int32(parts) {
		produceLayout(t, cl.Addr(), "in", p, layout(n, 0))
	}
	var seenA, seenB offsets
	cfgA := sourceConfig(cl.Addr(), "g-revoke-rip", "in")
	cfgA.CommitInterval = time.Hour // only the revoke commits
	a := start(t, newSource(t, cfgA), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seenA, nil)) })
	kafkatest.WaitFor(t, 60*time.Second, "A to process both partitions", func() bool {
		return seenA.count(0) == n && seenA.count(1) == n
	})
	refused := cl.Kfake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.RebalanceInProgress, Count: 1})
	b := start(t, newSource(t, sourceConfig(cl.Addr(), "g-revoke-rip", "in")), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seenB, nil)) })
	var moved int32 = -1
	kafkatest.WaitFor(t, 60*time.Second, "B to get a partition", func() bool {
		if st := b.src.Stats(); len(st.Partitions) == 1 {
			moved = st.Partitions[0].Partition
			return true
		}
		return false
	})
	kafkatest.WaitFor(t, 60*time.Second, "the moved partition committed to its end", func() bool {
		return committed(t, cl.Addr(), "g-revoke-rip", "in", parts)[moved] == n
	})
	if h := refused.Hits(); h != 1 {
		t.Fatalf("the coordinator refused %d commits, want the revoke's first", h)
	}
	if c := seenB.count(moved); c != 0 {
		t.Fatalf("B processed %d of the %d records A had finished on partition %d again", c, n, moved)
	}
	for _, r := range []*running{a, b} {
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFaultCloseCommitRebalanceInProgress: a member that finished 100 records and committed
// none (its commit interval is an hour) is stopped; the coordinator refuses Close's commit once
// with REBALANCE_IN_PROGRESS. Close tries again within its time, so the offset reaches the end
// and the partition's next owner redoes nothing. (In the chaos soak a member restart whose
// final commit met this refusal left its finished records to the next owner.)
func TestFaultCloseCommitRebalanceInProgress(t *testing.T) {
	const n = 100
	cl := startCluster(t, kafkatest.Topic("in", 1))
	produceLayout(t, cl.Addr(), "in", 0, layout(n, 0))
	var seen offsets
	cfg := sourceConfig(cl.Addr(), "g-close-rip", "in")
	cfg.CommitInterval = time.Hour // only Close commits
	r := start(t, newSource(t, cfg), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seen, nil)) })
	kafkatest.WaitFor(t, 60*time.Second, "all records processed", func() bool { return seen.count(0) == n })
	refused := cl.Kfake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.RebalanceInProgress, Count: 1})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if h := refused.Hits(); h != 1 {
		t.Fatalf("the coordinator refused %d commits, want Close's first", h)
	}
	if c := committed(t, cl.Addr(), "g-close-rip", "in", 1)[0]; c != n {
		t.Fatalf("committed %d after Close, want %d", c, n)
	}
}
