package kafka

import (
	"testing"

	"github.com/sluicehq/sluice/stage"
)

func TestTrackerCommitsOnlyContiguous(t *testing.T) {
	tr := newTracker()
	for off := range int64(10) {
		tr.received(off)
	}
	for _, off := range []int64{3, 1, 2} {
		if !tr.finished(off) {
			t.Fatalf("finished(%d) = false", off)
		}
		if got := tr.committable(); got != -1 {
			t.Fatalf("after finishing %d with 0 pending: committable = %d, want -1", off, got)
		}
	}
	tr.finished(0)
	if got := tr.committable(); got != 4 {
		t.Fatalf("committable = %d, want 4", got)
	}
	if got := tr.pending(); got != 6 {
		t.Fatalf("pending = %d, want 6", got)
	}
	if tr.finished(42) || tr.finished(2) {
		t.Fatal("finished of an unknown (or already folded) offset returned true")
	}
	if got := tr.committable(); got != 4 {
		t.Fatalf("committable moved on an unknown offset: %d", got)
	}
	for off := int64(9); off >= 4; off-- {
		tr.finished(off)
	}
	if got := tr.committable(); got != 10 {
		t.Fatalf("committable = %d, want 10", got)
	}
}

func TestTrackerGapsInOffsets(t *testing.T) {
	// Compacted topics and transaction markers leave gaps: the next offset to commit is the
	// last finished one + 1, whatever the gap.
	tr := newTracker()
	for _, off := range []int64{5, 9, 10, 20} {
		tr.received(off)
	}
	if tr.finished(6) {
		t.Fatal("finished(6) of a never-received offset returned true")
	}
	tr.finished(9)
	tr.finished(5)
	if got := tr.committable(); got != 11-1 {
		t.Fatalf("committable = %d, want 10", got)
	}
	tr.finished(20)
	tr.finished(10)
	if got := tr.committable(); got != 21 {
		t.Fatalf("committable = %d, want 21", got)
	}
}

func TestTrackerCompactionOver100k(t *testing.T) {
	tr := newTracker()
	const n = 100_000
	const window = 64
	next := int64(-1)
	// A sliding window: receive ahead, finish each window in reverse order.
	for base := int64(0); base < n; base += window {
		for off := base; off < base+window; off++ {
			tr.received(off)
		}
		for off := base + window - 1; off > base; off-- {
			if !tr.finished(off) {
				t.Fatalf("finished(%d) = false", off)
			}
			if tr.committable() != next {
				t.Fatalf("committable moved to %d before %d finished", tr.committable(), base)
			}
		}
		tr.finished(base)
		next = base + window
		if tr.committable() != next {
			t.Fatalf("committable = %d, want %d", tr.committable(), next)
		}
		if tr.pending() != 0 || len(tr.offs) != 0 {
			t.Fatalf("window not reclaimed: pending %d, len %d", tr.pending(), len(tr.offs))
		}
	}
	// One offset held back while 100k others finish: memory stays bounded by compaction.
	tr = newTracker()
	tr.received(0)
	for off := int64(1); off <= n; off++ {
		tr.received(off)
		tr.finished(off)
	}
	if tr.committable() != -1 {
		t.Fatalf("committable = %d with offset 0 unfinished", tr.committable())
	}
	tr.finished(0)
	if tr.committable() != n+1 {
		t.Fatalf("committable = %d, want %d", tr.committable(), n+1)
	}
	// Head-of-line: compaction while the head is finished in pieces.
	tr = newTracker()
	for off := range int64(n) {
		tr.received(off)
	}
	for off := range int64(n) {
		tr.finished(off)
		if tr.committable() != off+1 {
			t.Fatalf("committable = %d, want %d", tr.committable(), off+1)
		}
		if len(tr.offs) > 0 && tr.head > 1024 && tr.head*2 > len(tr.offs) {
			t.Fatalf("not compacted: head %d of %d", tr.head, len(tr.offs))
		}
	}
}

// TestLateCompletionNotCommitted: a completion carrying an earlier assignment's epoch (the
// partition was revoked and assigned again) is counted late and never reaches the tracker.
func TestLateCompletionNotCommitted(t *testing.T) {
	s := &Source{cfg: Config{Ordering: OrderKey}, parts: map[tpKey]*partState{}, byEpoch: map[uint64]*partState{}, revokeWake: make(chan struct{}, 1)}
	k := tpKey{"t", 0}
	ps := &partState{tp: k, epoch: 2, tr: newTracker(), keys: map[string]int{}, committed: -1}
	s.parts[k], s.byEpoch[ps.epoch] = ps, ps
	ps.tr.received(7)
	ps.inflight, ps.keys["a"] = 1, 1

	ev := stage.GetEvent()
	ev.Topic, ev.Partition, ev.Offset, ev.SourceTag, ev.Key = "t", 0, 7, 1, []byte("a")
	s.Complete(ev, true)
	if got := s.Stats().LateCompletions; got != 1 {
		t.Fatalf("LateCompletions = %d, want 1", got)
	}
	if ps.tr.committable() != -1 || ps.inflight != 1 || ps.keys["a"] != 1 {
		t.Fatalf("late completion changed the new assignment: committable %d, inflight %d, key %d", ps.tr.committable(), ps.inflight, ps.keys["a"])
	}

	// The current epoch's completion counts; a revoking partition's last one wakes the revoke.
	ps.revoking = true
	ev.SourceTag, ev.Key = 2, []byte("a")
	s.Complete(ev, true)
	if ps.tr.committable() != 8 || ps.inflight != 0 || len(ps.keys) != 0 {
		t.Fatalf("committable %d, inflight %d, keys %v", ps.tr.committable(), ps.inflight, ps.keys)
	}
	select {
	case <-s.revokeWake:
	default:
		t.Fatal("revoke not woken by the last in-flight completion")
	}
	// Not ok: freed but not committed.
	ps.tr.received(8)
	ps.inflight = 1
	ev.Offset, ev.Key = 8, nil
	s.Complete(ev, false)
	if ps.tr.committable() != 8 || s.Stats().Unfinished != 1 {
		t.Fatalf("unfinished event committed: committable %d, unfinished %d", ps.tr.committable(), s.Stats().Unfinished)
	}
	ev.Release()
}

// TestConsumerConfigFollowsPlan: the librdkafka keys are derived from Plan, and overrides are
// applied and reported.
func TestConsumerConfigFollowsPlan(t *testing.T) {
	c := Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Budget: 16 << 20, MaxMessageBytes: 1 << 20, StatsInterval: 200e6}
	c.setDefaults()
	cm, mem, err := c.consumerConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Plan(16<<20, 1<<20)
	if mem != want {
		t.Fatalf("memory %+v, want %+v", mem, want)
	}
	for key, v := range map[string]int{
		"queued.max.messages.kbytes": int(want.Prefetch / 1024),
		"fetch.max.bytes":            int(want.FetchMaxBytes),
		"max.partition.fetch.bytes":  int(want.PartitionFetchBytes),
		"statistics.interval.ms":     200,
	} {
		if cm[key] != v {
			t.Errorf("%s = %v, want %d", key, cm[key], v)
		}
	}
	for key, v := range map[string]any{"enable.auto.commit": false, "enable.auto.offset.store": false, "partition.assignment.strategy": "cooperative-sticky"} {
		if cm[key] != v {
			t.Errorf("%s = %v, want %v", key, cm[key], v)
		}
	}
	c.Eager = true
	c.Overrides = map[string]any{"fetch.max.bytes": 3 << 20, "queued.max.messages.kbytes": "2048", "max.partition.fetch.bytes": 65536}
	cm, mem, err = c.consumerConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cm["partition.assignment.strategy"] != "range" {
		t.Errorf("Eager: strategy %v", cm["partition.assignment.strategy"])
	}
	if mem.FetchMaxBytes != 3<<20 || mem.Prefetch != 2048*1024 || mem.PartitionFetchBytes != 65536 || mem.InFlight != want.InFlight {
		t.Fatalf("overrides not reported: %+v", mem)
	}
}
