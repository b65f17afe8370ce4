package kafka_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
)

// TestStaticMembershipDuplicateInstanceIDStopsTheFencedOne: a misconfigured deployment runs
// two processes with one GroupInstanceID. Pipeline A ("pod-0") processes and commits a first
// batch; pipeline B starts with the same instance id and group and takes A's place. The
// coordinator fences A (librdkafka's fatal FENCED_INSTANCE_ID), and A's Run returns on its own
// with an error that wraps the fenced error and names the instance id, without waiting out a
// close timeout (librdkafka refuses to close a consumer that raised a fatal error, and
// confluent-kafka-go's Close of it never returns); A's explicit Close returns at once; no
// goroutine is left. B redoes nothing A committed and processes every record produced after
// the takeover.
func TestStaticMembershipDuplicateInstanceIDStopsTheFencedOne(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // registered first: runs after the cluster and B stopped
	const parts, n, id, group = 4, 400, "pod-0", "g-fence"
	cl := startCluster(t, kafkatest.Topic("in", parts))
	var byA, byB offsets
	member := func(o *offsets) *running {
		cfg := sourceConfig(cl.Addr(), group, "in")
		cfg.GroupInstanceID = id
		cfg.Overrides["heartbeat.interval.ms"] = 100 // the fencing reaches A within a heartbeat
		cfg.Overrides["session.timeout.ms"] = 6000
		return start(t, newSource(t, cfg), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(o, nil)) })
	}
	processed := func(o *offsets) int {
		n := 0
		for p := range int32(parts) {
			n += o.count(p)
		}
		return n
	}

	a := member(&byA)
	produceN(t, cl.Addr(), "in", "v", n, 40)
	kafkatest.WaitFor(t, 60*time.Second, "A to process the first records", func() bool { return processed(&byA) == n })
	requireCommittedAtEnd(t, cl.Addr(), group, "in", parts) // A committed them all
	committedByA := highWatermarks(t, cl.Addr(), "in", parts)

	b := member(&byB)
	produceN(t, cl.Addr(), "in", "m", n, 40) // during the takeover: A, B or both process these
	var runErr error
	select {
	case runErr = <-a.done:
		a.once.Do(func() { a.err = runErr; a.cancel() }) // the cleanup's stop has nothing to wait for
	case <-time.After(60 * time.Second):
		t.Fatalf("A's Run did not return within 60 s of B joining with its instance id %q", id)
	}
	t.Logf("A's Run: %v", runErr)
	var ke ckafka.Error
	if !errors.As(runErr, &ke) || ke.Code() != ckafka.ErrFencedInstanceID || !ke.IsFatal() {
		t.Fatalf("A's Run error does not wrap the fatal FENCED_INSTANCE_ID error: %v", runErr)
	}
	if msg := runErr.Error(); !strings.Contains(msg, `group.instance.id "`+id+`"`) || !strings.Contains(msg, group) || !strings.Contains(msg, "fenced") {
		t.Fatalf("A's Run error does not say that instance id %q of group %q was fenced: %v", id, group, runErr)
	}
	// Run's close did not wait out the close timeout for a consumer close that never ends.
	if errors.Is(runErr, context.DeadlineExceeded) {
		t.Fatalf("A's close timed out: %v", runErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closeErr := a.src.Close(ctx) // idempotent: the pipeline closed it already
	if ctx.Err() != nil || errors.Is(closeErr, context.DeadlineExceeded) {
		t.Fatalf("A's Close waited for its context: %v", closeErr)
	}
	t.Logf("A's Close: %v", closeErr)

	hwTakeover := highWatermarks(t, cl.Addr(), "in", parts)
	produceN(t, cl.Addr(), "in", "w", n, 40) // after the takeover: B alone
	hwEnd := highWatermarks(t, cl.Addr(), "in", parts)
	kafkatest.WaitFor(t, 60*time.Second, "B to process every record produced after the takeover", func() bool {
		for p := range int32(parts) {
			for off := hwTakeover[p]; off < hwEnd[p]; off++ {
				if !byB.has(p, off) {
					return false
				}
			}
		}
		return true
	})
	for p := range int32(parts) {
		for off := committedByA[p]; off < hwTakeover[p]; off++ { // the records of the takeover
			if !byA.has(p, off) && !byB.has(p, off) {
				t.Fatalf("partition %d offset %d (produced during the takeover) was never processed", p, off)
			}
		}
	}
	dup := 0
	for k, c := range byB.snapshot() {
		if k[1] < committedByA[k[0]] {
			t.Fatalf("B processed partition %d offset %d again, below A's commit %d", k[0], k[1], committedByA[k[0]])
		}
		dup += c - 1
	}
	requireCommittedAtEnd(t, cl.Addr(), group, "in", parts)
	t.Logf("A processed %d, B %d (%d twice within B)", processed(&byA), processed(&byB), dup)
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
}
