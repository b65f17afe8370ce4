package kafka

import (
	"testing"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/stage"
)

func TestTrackerCommitsOnlyContiguous(t *testing.T) {
	tr := newTracker()
	for off := range int64(10) {
		tr.received(off, nil)
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
		tr.received(off, nil)
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
			tr.received(off, nil)
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
	tr.received(0, nil)
	for off := int64(1); off <= n; off++ {
		tr.received(off, nil)
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
		tr.received(off, nil)
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

// emittedEvent returns an event as the pipeline emits it: Origin fixed from its fields by Begin.
func emittedEvent(tag uint64, off int64, key string) *stage.Event {
	ev := stage.GetEvent()
	ev.Topic, ev.Partition, ev.Offset, ev.SourceTag, ev.Key = "t", 0, off, tag, []byte(key)
	flow.Hooks.Life(ev).Begin(ev.Topic, ev.Partition, ev.Offset, ev.SourceTag, 0, nil)
	return ev
}

// recycle undoes emittedEvent's Begin and returns the event to the pool.
func recycle(ev *stage.Event) {
	flow.Hooks.Life(ev).Unbegin()
	ev.Release()
}

// TestLateCompletionNotCommitted: a completion of an unknown epoch is counted late; one of a
// retired epoch (the partition let go with it in flight) releases its ordering slot in the
// gate it shares with the new assignment and is never committed; a current one commits, frees
// the slot the tracker kept (whatever the event's fields say now) and wakes a revoke.
func TestLateCompletionNotCommitted(t *testing.T) {
	s := &Source{cfg: Config{Ordering: OrderKey}, parts: map[tpKey]*partState{}, byEpoch: map[uint64]*partState{}, gates: map[tpKey]*gate{}, revokeWake: make(chan struct{}, 1)}
	k := tpKey{"t", 0}
	g := s.gateFor(k)
	old := &partState{tp: k, epoch: 1, tr: newTracker(), g: g, committed: -1, gone: true}
	ps := &partState{tp: k, epoch: 2, tr: newTracker(), g: g, committed: -1}
	s.parts[k], s.byEpoch[ps.epoch], s.byEpoch[old.epoch] = ps, ps, old
	old.tr.received(7, []byte("a"))
	old.inflight, g.inflight, g.keys["a"] = 1, 1, 1

	ev := emittedEvent(9, 7, "a")
	s.Complete(ev, true)
	recycle(ev)
	if got := s.Stats().LateCompletions; got != 1 || g.keys["a"] != 1 {
		t.Fatalf("unknown epoch: LateCompletions = %d (want 1), key count %d (want 1)", got, g.keys["a"])
	}
	ev = emittedEvent(1, 7, "a")
	ev.Key, ev.Offset, ev.SourceTag = []byte("changed by a stage"), 99, 2
	s.Complete(ev, true)
	recycle(ev)
	if got := s.Stats().LateCompletions; got != 2 || g.inflight != 0 || len(g.keys) != 0 || s.byEpoch[1] != nil {
		t.Fatalf("retired epoch: late %d, gate %d %v, byEpoch[1] %v", got, g.inflight, g.keys, s.byEpoch[1])
	}
	if ps.tr.committable() != -1 || ps.inflight != 0 || s.gates[k] != g {
		t.Fatalf("late completion changed the new assignment: committable %d, inflight %d", ps.tr.committable(), ps.inflight)
	}

	// The current epoch's completion counts; a revoking partition's last one wakes the revoke.
	ps.tr.received(7, []byte("a"))
	ps.inflight, g.inflight, g.keys["a"] = 1, 1, 1
	ps.revoking = true
	ev = emittedEvent(2, 7, "a")
	ev.Key = nil // a stage cleared it: the slot is still released
	s.Complete(ev, true)
	recycle(ev)
	if ps.tr.committable() != 8 || ps.inflight != 0 || g.inflight != 0 || len(g.keys) != 0 {
		t.Fatalf("committable %d, inflight %d, gate %d %v", ps.tr.committable(), ps.inflight, g.inflight, g.keys)
	}
	select {
	case <-s.revokeWake:
	default:
		t.Fatal("revoke not woken by the last in-flight completion")
	}
	// Not ok: freed but not committed.
	ps.tr.received(8, []byte("b"))
	ps.inflight, g.inflight, g.keys["b"] = 1, 1, 1
	ev = emittedEvent(2, 8, "b")
	s.Complete(ev, false)
	recycle(ev)
	if ps.tr.committable() != 8 || s.Stats().Unfinished != 1 || len(g.keys) != 0 {
		t.Fatalf("unfinished event committed: committable %d, unfinished %d, keys %v", ps.tr.committable(), s.Stats().Unfinished, g.keys)
	}
}

// TestTrackerKeepsKeys: the tracker returns the key kept at receipt, once, whether the event
// finished or not, across compaction.
func TestTrackerKeepsKeys(t *testing.T) {
	tr := newTracker()
	tr.received(0, nil) // before any key: no key slice yet
	const n = 3000
	for off := int64(1); off < n; off++ {
		tr.received(off, []byte{byte(off), byte(off >> 8)})
	}
	check := func(off int64, ok bool) {
		t.Helper()
		key, found := tr.complete(off, ok)
		if !found || off == 0 && key != nil || off > 0 && (len(key) != 2 || key[0] != byte(off) || key[1] != byte(off>>8)) {
			t.Fatalf("complete(%d) = %v, %v", off, key, found)
		}
	}
	for off := int64(0); off < 2000; off++ { // in order: folds, and compacts past 1024
		check(off, true)
	}
	if tr.head > 1024 {
		t.Fatalf("not compacted: head %d", tr.head)
	}
	check(2500, false) // not ok: the key is released, the offset stays unfinished
	if key, found := tr.complete(2500, true); !found || key != nil {
		t.Fatalf("second complete(2500) = %v, %v: the key must be returned once", key, found)
	}
	for off := int64(n - 1); off >= 2000; off-- {
		if off != 2500 {
			check(off, true)
		}
	}
	if tr.committable() != n || tr.pending() != 0 {
		t.Fatalf("committable %d, pending %d", tr.committable(), tr.pending())
	}
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
