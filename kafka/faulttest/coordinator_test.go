package faulttest

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
)

// TestFaultCoordinatorDownAtClose: the group coordinator goes away (OffsetCommit and
// FindCoordinator refused) after a successful commit, while records keep arriving, and Run is
// cancelled during the outage. A commit librdkafka sent just then is retried by librdkafka until
// the coordinator answers (confluentinc/librdkafka#3740), so:
//   - the poll loop never waits for it: the records produced after it are all processed during
//     the outage;
//   - Close waits for its final commit at most the close timeout; the stranded commit holds
//     librdkafka's consumer close until the coordinator answers, so the consumer finishes
//     closing in the background: Run returns within drain + close timeouts during the outage,
//     with an error naming the unanswered commit, and once the coordinator is back the
//     background close ends and no goroutine is left;
//   - nothing is committed past what was processed, and a new consumer of the group gets the
//     rest: nothing lost.
func TestFaultCoordinatorDownAtClose(t *testing.T) {
	const parts, n1, n2, n3 = 4, 400, 100, 400
	const drainTimeout, closeTimeout, recoverAfter = 3 * time.Second, 2 * time.Second, 12 * time.Second
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "a", n1)
	s := newSeen()
	leaks := goleak.IgnoreCurrent()
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 4,
		// A session long enough that the outage does not end the membership before the test
		// cancels Run (heartbeats fail while the coordinator is away).
		cfg:  func(c *kafka.Config) { c.Overrides["session.timeout.ms"] = 30000 },
		pipe: []pipeline.Option{pipeline.WithDrainTimeout(drainTimeout), pipeline.WithCloseTimeout(closeTimeout)}})
	kafkatest.WaitFor(t, 30*time.Second, "the first records processed", func() bool { return s.distinct() == n1 })
	kafkatest.WaitFor(t, 30*time.Second, "the first records committed", func() bool { return committedSum(t, cl.Addr(), "g", "in", parts) == n1 })

	// The coordinator goes away; the next commit (of the next records) is refused.
	k := cl.Kfake()
	commits := k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.CoordinatorNotAvailable, Count: -1})
	finds := k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.FindCoordinator}, Err: kerr.CoordinatorNotAvailable, Count: -1})
	for v := range produce(t, cl.Addr(), "in", "b", n2) {
		want[v] = true
	}
	wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := commits.Wait(wctx, 1); err != nil {
		t.Fatalf("no commit reached the refusing coordinator: %v", err)
	}
	// A commit is now stranded in librdkafka; the poll loop must go on without it.
	for v := range produce(t, cl.Addr(), "in", "c", n3) {
		want[v] = true
	}
	kafkatest.WaitFor(t, 20*time.Second, "the records produced after the stranded commit processed", func() bool { return s.distinct() == n1+n2+n3 })
	processed := s.distinct()

	r.stop()
	cancelled := time.Now()
	recovered := make(chan time.Time, 1)
	go func() {
		time.Sleep(recoverAfter) // the outage itself: it outlasts drain and close
		commits.Remove()
		finds.Remove()
		recovered <- time.Now()
	}()
	var err error
	select {
	case err = <-r.done:
	case <-time.After(drainTimeout + closeTimeout + 3*time.Second):
		t.Fatalf("Run did not return within drain + close timeouts (%v) during the coordinator outage", drainTimeout+closeTimeout)
	}
	returned := time.Now()
	t.Logf("Run returned %v after the cancel: %v", returned.Sub(cancelled), err)
	select {
	case <-recovered:
		t.Fatal("the coordinator recovered before Run returned: the test does not show a bounded shutdown")
	default:
	}
	if err == nil || !strings.Contains(err.Error(), "did not answer a commit") {
		t.Fatalf("Run = %v, want an error naming the unanswered commit", err)
	}
	if st := r.p.Stats(); st.InFlightEvents != 0 || st.Failed != 0 {
		t.Fatalf("the drain stopped hard: %+v", st)
	}
	<-recovered
	// The consumer finishes closing in the background once the coordinator answers.
	kafkatest.WaitFor(t, 30*time.Second, "the background close to end (no goroutine left)", func() bool { return goleak.Find(leaks) == nil })
	got := committedSum(t, cl.Addr(), "g", "in", parts)
	if got < n1 || got > int64(processed) {
		t.Fatalf("committed %d after the outage, want between the last successful commit (%d) and what was processed (%d)", got, n1, processed)
	}
	r2 := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 4})
	kafkatest.WaitFor(t, 30*time.Second, "the rest consumed again", func() bool { return s.distinct() == len(want) })
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	if err := r2.wait(t); err != nil {
		t.Fatal(err)
	}
}

// TestFaultSlowCoordinatorAtRevoke: every commit takes the coordinator 5 s to answer while a
// second member joins. The revoke of the first member's partitions waits for its commit at
// most the revoke deadline (RevokeTimeout, here 500 ms, but at least 1 s for the commit), not
// for the coordinator; its partitions go to the second member and, once the coordinator is fast
// again, nothing is lost.
func TestFaultSlowCoordinatorAtRevoke(t *testing.T) {
	const n, parts = 3000, 4
	const commitDelay = 5 * time.Second
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	cfg := func(c *kafka.Config) {
		c.RevokeTimeout = 500 * time.Millisecond
		// Heartbeats wait behind a slow commit on the coordinator's connection: a session
		// longer than the delay keeps both members in the group.
		c.Overrides["session.timeout.ms"] = 20000
	}
	a := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 2, work: slowWork, cfg: cfg})
	kafkatest.WaitFor(t, 30*time.Second, "a tenth processed", func() bool { return s.distinct() >= n/10 })

	k := cl.Kfake()
	var slow atomic.Bool
	slow.Store(true)
	k.ControlKey(int16(kmsg.OffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		if !slow.Load() {
			k.DropControl()
			return nil, nil, false
		}
		k.KeepControl()
		k.SleepControl(func() { time.Sleep(commitDelay) })
		return nil, nil, false
	})
	base := a.src.Stats().Rebalances // the first assignment
	b := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 2, work: slowWork, cfg: cfg})
	kafkatest.WaitFor(t, 60*time.Second, "the first member's revoke to start", func() bool { return a.src.Stats().Rebalances > base })
	began := time.Now()
	kafkatest.WaitFor(t, 60*time.Second, "the first member's revoke to end", func() bool { return a.src.Stats().Assigned < parts })
	d := time.Since(began)
	t.Logf("revoke took %v", d)
	if d > 3*time.Second {
		t.Fatalf("the revoke took %v with a coordinator answering commits in %v, want the revoke deadline (1 s) and a slack", d, commitDelay)
	}
	slow.Store(false)
	kafkatest.WaitFor(t, 60*time.Second, "all processed", func() bool { return s.distinct() == n })
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	for _, r := range []*run{a, b} {
		if err := r.wait(t); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFaultCommitRefusedUntilTheEnd: the coordinator refuses every commit (an error librdkafka
// does not retry) until after the last record was processed. A refused commit never counts as
// done: once the coordinator accepts commits again, the next one covers everything.
func TestFaultCommitRefusedUntilTheEnd(t *testing.T) {
	const n, parts = 200, 2
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	refused := cl.Kfake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.UnknownServerError, Count: -1})
	want := produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 2})
	kafkatest.WaitFor(t, 30*time.Second, "all processed", func() bool { return s.distinct() == n })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := refused.Wait(ctx, refused.Hits()+1); err != nil { // a commit after the end was refused
		t.Fatal(err)
	}
	if c := committedSum(t, cl.Addr(), "g", "in", parts); c != 0 {
		t.Fatalf("committed %d while the coordinator refused every commit", c)
	}
	refused.Remove()
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	if st := r.src.Stats(); st.CommitErrors == 0 {
		t.Fatalf("no commit error counted: %+v", st)
	}
}
