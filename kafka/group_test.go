package kafka_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
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
			pipeline.To(b.Source(), got.sink("collect", func(*stage.Event) { time.Sleep(300 * time.Microsecond) }, stage.WithConcurrency(2)))
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

// TestFaultRevokeWhileInFlight: a second member joins while the first has events in flight on
// every partition (held in the stage at a gate). The revoke comes while they run, waits for
// them and commits them, and the next owner starts after them: nothing is lost, nothing
// completes late and nothing is processed twice. A second wave of records, produced once both
// members own partitions, shows that the revoke handed partitions over. The order of the
// test's steps and the members' log lines is recorded in one timeline.
func TestFaultRevokeWhileInFlight(t *testing.T) {
	const n, n2, parts, heldPer = 400, 400, 4, 2 // offsets below heldPer of each partition wait at the gate
	cl := startCluster(t, kafkatest.Topic("in", parts))
	want := produceN(t, cl.Addr(), "in", "v", n, 40)
	for p, hw := range highWatermarks(t, cl.Addr(), "in", parts) {
		if hw <= heldPer {
			t.Fatalf("partition %d holds %d records; the test needs more than %d in each", p, hw, heldPer)
		}
	}
	var (
		gate     = make(chan struct{})
		openOnce sync.Once
		open     atomic.Bool // set just before the gate opens
		mu       sync.Mutex
		waiting  int // calls waiting at the gate now
	)
	var tl timeline
	openGate := func() { openOnce.Do(func() { tl.mark("gate opened"); open.Store(true); close(gate) }) }
	t.Cleanup(openGate) // runs before the members' stop (cleanups run last-in first-out)
	var gotA, gotB seen
	var early atomic.Int32 // events the second member processed before the gate opened
	member := func(second bool) *running {
		cfg := sourceConfig(cl.Addr(), "g-revoke", "in")
		cfg.Ordering, cfg.RevokeTimeout = kafka.OrderNone, 30*time.Second
		cfg.Logger = tl.logger(map[bool]string{false: "A", true: "B"}[second])
		return start(t, newSource(t, cfg), func(b *pipeline.Builder) {
			work := pipeline.Then(b.Source(), stage.Map("slow", func(ctx context.Context, ev *stage.Event) (*stage.Event, error) {
				if second && !open.Load() {
					early.Add(1)
				}
				if ev.Offset < heldPer {
					mu.Lock()
					waiting++
					mu.Unlock()
					defer func() { mu.Lock(); waiting--; mu.Unlock() }()
					select {
					case <-gate:
					case <-ctx.Done():
						return nil, ctx.Err()
					}
				}
				return ev, nil
			}, stage.WithConcurrency(16), stage.WithUnordered()))
			got := &gotA
			if second {
				got = &gotB
			}
			pipeline.To(work, got.sink("collect", nil))
		})
	}
	waitingNow := func() int { mu.Lock(); defer mu.Unlock(); return waiting }
	a := member(false)
	kafkatest.WaitFor(t, 30*time.Second, "A to hold the first events of every partition at the gate", func() bool {
		return waitingNow() == heldPer*parts
	})
	r0 := a.src.Stats().Rebalances // A's assignment
	tl.mark("B started")
	b := member(true)
	// The revoke callback counts itself as it starts. Until the gate opens, A's held events
	// are in flight, and B cannot own a partition before A's revoke has let it go.
	kafkatest.WaitFor(t, 30*time.Second, "A's revoke to start", func() bool { return a.src.Stats().Rebalances > r0 })
	tl.mark("A's rebalance callback started")
	if w, in := waitingNow(), a.p.Stats().InFlightEvents; w != heldPer*parts || in < heldPer*parts {
		t.Fatalf("at the revoke: %d calls at the gate, %d events in flight; want %d each", w, in, heldPer*parts)
	}
	if sb := b.src.Stats(); sb.Assigned != 0 {
		t.Fatalf("B owns %d partitions while A's revoked events are still in flight", sb.Assigned)
	}
	openGate()
	kafkatest.WaitFor(t, 30*time.Second, "B to be assigned", func() bool { return b.src.Stats().Assigned > 0 })
	for k, v := range produceN(t, cl.Addr(), "in", "w", n2, 40) {
		want[k] = v
	}
	all := func() []rec { return append(gotA.all(), gotB.all()...) }
	kafkatest.WaitFor(t, 60*time.Second, "every record", func() bool { return len(all()) >= n+n2 })
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
	// The callback that started before the gate opened was A's revoke (A logged no assignment
	// since B started), and it ended only after the gate opened: it waited for the events.
	started, opened := tl.index("test: A's rebalance callback started", 0), tl.index("test: gate opened", 0)
	revoked := tl.index("A: sluice/kafka: partitions revoked", 0)
	if assigned := tl.index("A: sluice/kafka: partitions assigned", tl.index("test: B started", 0)); assigned >= 0 && assigned < revoked {
		t.Fatalf("A's first callback after B started was an assignment, not the revoke: %q", tl.all())
	}
	if started < 0 || revoked < opened || opened < started {
		t.Fatalf("A's revoke did not start before the gate opened and end after it: %q", tl.all())
	}
	if e := early.Load(); e != 0 {
		t.Fatalf("B processed %d events before A's in-flight events of the revoked partitions finished", e)
	}
	requireSet(t, want, values(all()))
	if got := len(all()); got != n+n2 {
		t.Fatalf("processed %d for %d records: a revoked partition's in-flight or finished work was redone", got, n+n2)
	}
	if na, nb := len(gotA.all()), len(gotB.all()); nb == 0 || na <= n {
		t.Fatalf("A processed %d, B %d: both should have processed part of the second wave", na, nb)
	}
}

// timeline records test steps and the lines sources log, in one order, so a test can check
// what happened before what. Safe for concurrent use; the zero value is ready.
type timeline struct {
	mu    sync.Mutex
	lines []string
}

// mark records a test step as "test: what".
func (tl *timeline) mark(what string) { tl.add("test: " + what) }

func (tl *timeline) add(line string) {
	tl.mu.Lock()
	tl.lines = append(tl.lines, line)
	tl.mu.Unlock()
}

// logger returns a logger recording each message as "name: message" (attributes dropped).
func (tl *timeline) logger(name string) *slog.Logger {
	return slog.New(timelineHandler{tl: tl, name: name})
}

// index returns the position of the first line equal to line at or after from, or -1.
func (tl *timeline) index(line string, from int) int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i := max(from, 0); i < len(tl.lines); i++ {
		if tl.lines[i] == line {
			return i
		}
	}
	return -1
}

func (tl *timeline) all() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return append([]string(nil), tl.lines...)
}

type timelineHandler struct {
	tl   *timeline
	name string
}

func (h timelineHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h timelineHandler) Handle(_ context.Context, r slog.Record) error {
	h.tl.add(h.name + ": " + r.Message)
	return nil
}
func (h timelineHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h timelineHandler) WithGroup(string) slog.Handler      { return h }
