package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
)

// TestCommitMetadataLostAssignmentComesBack: the coordinator refuses every commit while the
// only member processes a partition's 500 records; then a heartbeat answered ILLEGAL_GENERATION
// makes librdkafka drop the assignment as lost (no commit) and rejoin, and the group gives the
// partition straight back. The committed offset is still nothing, so the partition is fetched
// from offset 0 again, but the member remembers what it finished and processes none of the 500
// again: each record is processed exactly once, and once commits are accepted the offset
// reaches the end. (The chaos soak's duplicates were mostly this: a member whose commits failed
// during a rebalance storm lost its assignment and got it back.)
func TestCommitMetadataLostAssignmentComesBack(t *testing.T) {
	const n = 500
	cl := startCluster(t, kafkatest.Topic("in", 1))
	produceLayout(t, cl.Addr(), "in", 0, layout(n, 0))
	k := cl.Kfake()
	refused := k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.UnknownServerError, Count: -1})
	var seen offsets
	r := start(t, newSource(t, sourceConfig(cl.Addr(), "g-lost", "in")), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seen, nil)) })
	kafkatest.WaitFor(t, 60*time.Second, "all records processed once", func() bool { return seen.count(0) == n })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := refused.Wait(ctx, refused.Hits()+1); err != nil { // a commit after the last record was refused
		t.Fatal(err)
	}
	before := r.src.Stats()
	k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Err: kerr.IllegalGeneration, Count: 1})
	kafkatest.WaitFor(t, 60*time.Second, "the assignment lost and given back", func() bool {
		st := r.src.Stats()
		return st.Revokes > before.Revokes && st.Assigns > before.Assigns && st.Assigned == 1
	})
	if c := committed(t, cl.Addr(), "g-lost", "in", 1)[0]; c > 0 {
		t.Fatalf("committed %d while the coordinator refused every commit", c)
	}
	refused.Remove()
	kafkatest.WaitFor(t, 60*time.Second, "the offset committed to the end", func() bool {
		return committed(t, cl.Addr(), "g-lost", "in", 1)[0] == n
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	for off := range int64(n) {
		if c := seen.snapshot()[[2]int64{0, off}]; c != 1 {
			t.Fatalf("offset %d processed %d times, want once (%d processed in all)", off, c, seen.count(0))
		}
	}
	if st := r.src.Stats(); st.SkippedFinished != n {
		t.Fatalf("skipped %d, want the %d this member had finished", st.SkippedFinished, n)
	}
}
