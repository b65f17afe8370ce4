package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestRestartResumesFromCommittedOffsets: a second source in the same group starts exactly at
// the first one's committed offsets: nothing below them again, everything above them.
func TestRestartResumesFromCommittedOffsets(t *testing.T) {
	const n, parts = 2000, 4
	cl := startCluster(t, kafkatest.Topic("in", parts))
	want := produceN(t, cl.Addr(), "in", "v", n, 50)
	slow := func(*stage.Event) { time.Sleep(time.Millisecond) }

	var first seen
	r1 := start(t, newSource(t, sourceConfig(cl.Addr(), "g-restart", "in")), func(b *pipeline.Builder) {
		pipeline.To(b.Source(), first.sink("collect", slow))
	})
	kafkatest.WaitFor(t, 60*time.Second, "the first run to process some", func() bool { return r1.p.Stats().Completed >= n/4 })
	if err := r1.stop(); err != nil {
		t.Fatal(err)
	}
	c1 := committed(t, cl.Addr(), "g-restart", "in", parts)
	var sum int64
	for _, c := range c1 {
		sum += max(c, 0)
	}
	if sum == 0 || sum >= n {
		t.Fatalf("first run committed %d of %d: the test needs a partial run", sum, n)
	}
	// Everything below the committed offsets was processed by the first run.
	done1 := map[[2]int64]bool{}
	for _, r := range first.all() {
		done1[[2]int64{int64(r.Partition), r.Offset}] = true
	}
	for p, c := range c1 {
		for off := int64(0); off < c; off++ {
			if !done1[[2]int64{int64(p), off}] {
				t.Fatalf("offset %d/%d committed but never processed", p, off)
			}
		}
	}

	var second seen
	r2 := start(t, newSource(t, sourceConfig(cl.Addr(), "g-restart", "in")), func(b *pipeline.Builder) {
		pipeline.To(b.Source(), second.sink("collect", nil))
	})
	kafkatest.WaitFor(t, 60*time.Second, "the second run to finish the rest", func() bool { return r2.p.Stats().Completed >= uint64(n-sum) })
	requireCommittedAtEnd(t, cl.Addr(), "g-restart", "in", parts)
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}
	got2 := second.all()
	if len(got2) != n-int(sum) {
		t.Fatalf("second run processed %d, want exactly the %d uncommitted", len(got2), n-sum)
	}
	for _, r := range got2 {
		if r.Offset < c1[r.Partition] {
			t.Fatalf("second run re-processed committed offset %d/%d (committed %d)", r.Partition, r.Offset, c1[r.Partition])
		}
	}
	union := values(first.all())
	for v, k := range values(got2) {
		union[v] += k
	}
	requireSet(t, want, union)
}

func TestRebalanceThreeConsumersCooperative(t *testing.T) { rebalanceScenario(t, false) }
func TestRebalanceThreeConsumersEager(t *testing.T)       { rebalanceScenario(t, true) }

// rebalanceScenario: A starts, B and C join mid-stream, A leaves: nothing is lost and the
// committed offsets reach the high watermarks.
func rebalanceScenario(t *testing.T, eager bool) {
	const n, parts = 3000, 6
	cl := startCluster(t, kafkatest.Topic("in", parts))
	want := produceN(t, cl.Addr(), "in", "v", n, 60)
	var got seen
	startMember := func() *running {
		cfg := sourceConfig(cl.Addr(), "g-rebal", "in")
		cfg.Eager = eager
		return start(t, newSource(t, cfg), func(b *pipeline.Builder) {
			pipeline.To(b.Source(), got.sink("collect", func(*stage.Event) { time.Sleep(300 * time.Microsecond) }, stage.Concurrency(2)))
		})
	}
	distinct := func() int { return len(values(got.all())) }
	a := startMember()
	kafkatest.WaitFor(t, 60*time.Second, "A to process a fifth", func() bool { return distinct() >= n/5 })
	b := startMember()
	kafkatest.WaitFor(t, 60*time.Second, "two fifths", func() bool { return distinct() >= 2*n/5 })
	c := startMember()
	kafkatest.WaitFor(t, 60*time.Second, "three fifths", func() bool { return distinct() >= 3*n/5 })
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitFor(t, 90*time.Second, "every record", func() bool { return distinct() >= n })
	requireCommittedAtEnd(t, cl.Addr(), "g-rebal", "in", parts)
	for _, r := range []*running{b, c} {
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}
	all := got.all()
	requireSet(t, want, values(all))
	for _, r := range []*running{a, b, c} {
		if st := r.src.Stats(); st.CommitErrors > 0 || st.RevokeTimeouts > 0 {
			t.Logf("member stats: %+v", st)
		}
	}
	t.Logf("processed %d for %d records (at-least-once duplicates %d)", len(all), n, len(all)-n)
}

// TestFaultRevokeWhileInFlight: a member joins while the first one has slow events in flight:
// the revoke waits for them and commits them, so nothing is lost, nothing completes late and
// nothing is processed twice.
func TestFaultRevokeWhileInFlight(t *testing.T) {
	const n, parts = 400, 4
	cl := startCluster(t, kafkatest.Topic("in", parts))
	want := produceN(t, cl.Addr(), "in", "v", n, 40)
	var got seen
	var conc maxTracker
	member := func() *running {
		cfg := sourceConfig(cl.Addr(), "g-revoke", "in")
		cfg.Ordering, cfg.RevokeTimeout = kafka.OrderNone, 30*time.Second
		return start(t, newSource(t, cfg), func(b *pipeline.Builder) {
			work := pipeline.Then(b.Source(), stage.Map("slow", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
				conc.enter()
				defer conc.leave()
				time.Sleep(10 * time.Millisecond)
				return ev, nil
			}, stage.Concurrency(8), stage.Unordered()))
			pipeline.To(work, got.sink("collect", nil))
		})
	}
	a := member()
	kafkatest.WaitFor(t, 30*time.Second, "A to have events in flight", func() bool {
		s := a.p.Stats()
		return s.Completed >= 20 && s.InFlightEvents >= 8
	})
	b := member()
	kafkatest.WaitFor(t, 30*time.Second, "B to be assigned", func() bool { return b.src.Stats().Assigned > 0 })
	kafkatest.WaitFor(t, 60*time.Second, "every record", func() bool { return len(got.all()) >= n })
	requireCommittedAtEnd(t, cl.Addr(), "g-revoke", "in", parts)
	for _, r := range []*running{a, b} {
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}
	sa, sb := a.src.Stats(), b.src.Stats()
	if sa.RevokeTimeouts != 0 || sa.LateCompletions != 0 || sb.LateCompletions != 0 {
		t.Fatalf("revoke did not wait: A %+v", sa)
	}
	if sa.Rebalances < 2 {
		t.Fatalf("A saw %d rebalance callbacks, want an assign and a revoke", sa.Rebalances)
	}
	all := got.all()
	requireSet(t, want, values(all))
	if len(all) != n {
		t.Fatalf("processed %d for %d records: a revoked partition's in-flight or finished work was redone", len(all), n)
	}
}
