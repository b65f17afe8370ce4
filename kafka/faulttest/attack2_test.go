package faulttest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// Second round of adversarial probes of issue 12, written from the README as a user would.

// slowProduceTo makes the broker answer every produce request naming topic after d.
func slowProduceTo(cl *kafkatest.Cluster, topic string, d time.Duration) {
	k := cl.Kfake()
	k.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.KeepControl()
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == topic {
				k.SleepControl(func() { time.Sleep(d) })
				break
			}
		}
		return nil, nil, false
	})
}

// committedBelow asserts that every record of "in" below its partition's committed offset is
// in out or in dlq.
func committedBelow(t *testing.T, addr string, parts, n int, outs ...*seen) {
	t.Helper()
	committed, err := kafkatest.Committed(addr, "g", "in", parts)
	if err != nil {
		t.Fatal(err)
	}
	in, err := kafkatest.ReadMessages(addr, "in", n, 30*time.Second)
	if err != nil || len(in) != n {
		t.Fatalf("reading in: %d of %d, %v", len(in), n, err)
	}
	lost := 0
	for _, m := range in {
		if int64(m.TopicPartition.Offset) >= committed[m.TopicPartition.Partition] {
			continue
		}
		found := false
		for _, s := range outs {
			if s.m[string(m.Value)] > 0 {
				found = true
			}
		}
		if !found {
			lost++
			if lost <= 5 {
				t.Errorf("in[%d]@%d (%s) committed (offset %d) but neither written nor dead-lettered",
					m.TopicPartition.Partition, m.TopicPartition.Offset, m.Value, committed[m.TopicPartition.Partition])
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d records committed without their output or dead letter; committed %v", lost, committed)
	}
	t.Logf("committed %v", committed)
}

// TestFaultAttack2NackStormSlowDeadLetter: every delivery of the producer sink fails (output
// refused, message.timeout.ms 300) and goes to a dead-letter topic on the same producer that
// accepts slowly (each produce answered after 200 ms). Run is cancelled mid-way: it returns
// within drain + 2 × close timeout, no goroutine is left, and every input below the committed
// offset is in the output or the dead-letter topic.
func TestFaultAttack2NackStormSlowDeadLetter(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const drain, closeT, n, parts = 2 * time.Second, 2 * time.Second, 400, 2
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts), kafkatest.Topic("out", 1), kafkatest.Topic("dlq", 1))
	produce(t, cl.Addr(), "in", "v", n)
	refuseProduce(cl, "out")
	slowProduceTo(cl, "dlq", 200*time.Millisecond)
	r := startCopy(t, cl.Addr(), copyOpts{dlq: "dlq", timeout: 300,
		pipe: []pipeline.Option{pipeline.WithDrainTimeout(drain), pipeline.WithCloseTimeout(closeT)}})
	kafkatest.WaitFor(t, 30*time.Second, "dead letters", func() bool { return r.prod.Stats().DeadLetters >= 5 })
	t.Logf("committed before cancel: %d; dlq %v", committedOr(cl.Addr(), parts), r.prod.Stats())
	r.stop()
	began := time.Now()
	err := awaitRun(t, r.done, drain+2*closeT+10*time.Second)
	took := time.Since(began)
	t.Logf("Run returned after %v: %v; producer %+v", took.Round(time.Millisecond), err, r.prod.Stats())
	if took > drain+2*closeT+time.Second {
		t.Errorf("Run took %v, want within drain + 2 × close (%v)", took, drain+2*closeT)
	}
	out := topicValues(t, cl.Addr(), "out", 1)
	dlq := topicValues(t, cl.Addr(), "dlq", 1)
	t.Logf("out %d, dlq %d", out.distinct(), dlq.distinct())
	committedBelow(t, cl.Addr(), parts, n, out, dlq)
}

// asyncRun is source "in" → an AsyncSink the test writes, running in the background.
type asyncRun struct {
	p    *pipeline.Pipeline
	done chan error
	stop context.CancelFunc
}

func startAsync(t *testing.T, addr string, fn func(ctx context.Context, ev *stage.Event, done stage.Done) error, closeFn func(context.Context) error, opts ...pipeline.Option) *asyncRun {
	t.Helper()
	src := attackSource(t, addr, nil)
	b := pipeline.New(src, append(append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger())), opts...)...)
	pipeline.To(b.Source(), stage.AsyncSink("async", fn, stage.WithClose(closeFn), stage.WithConcurrency(4)))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &asyncRun{p: p, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- p.Run(ctx) }()
	return r
}

// TestFaultAttack2AsyncSinkDoubleAck: a user-written async sink acks every record from a
// goroutine of its own, then (a bug) acks a third of them again and Nacks another third after
// the Ack, while Run's context is cancelled. Every misuse is counted (pool.DoubleReleases),
// no event finishes twice (completed + failed = emitted), Run returns nil within drain + close,
// and every record below the committed offset reached the sink.
func TestFaultAttack2AsyncSinkDoubleAck(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const drain, closeT, n, parts = 2 * time.Second, 2 * time.Second, 3000, 2
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	var wg sync.WaitGroup
	var misuses atomic.Int64
	before := pool.DoubleReleases()
	r := startAsync(t, cl.Addr(), func(_ context.Context, ev *stage.Event, done stage.Done) error {
		v, off := string(ev.Value), ev.Offset
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.add(v)
			done.Ack()
			switch off % 3 {
			case 0:
				misuses.Add(1)
				done.Ack()
			case 1:
				misuses.Add(1)
				done.Nack(errors.New("nack after ack"))
			}
		}()
		return nil
	}, nil, pipeline.WithDrainTimeout(drain), pipeline.WithCloseTimeout(closeT))
	kafkatest.WaitFor(t, 30*time.Second, "a third processed", func() bool { return s.distinct() >= n/3 })
	r.stop()
	began := time.Now()
	err := awaitRun(t, r.done, drain+2*closeT+10*time.Second)
	took := time.Since(began)
	wg.Wait()
	st := r.p.Stats()
	t.Logf("Run returned after %v: %v; emitted %d completed %d failed %d; misuses %d counted %d", took.Round(time.Millisecond), err,
		st.Emitted, st.Completed, st.Failed, misuses.Load(), pool.DoubleReleases()-before)
	if err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if took > drain+2*closeT+time.Second {
		t.Errorf("Run took %v", took)
	}
	if st.Completed+st.Failed != st.Emitted {
		t.Errorf("completed %d + failed %d != emitted %d", st.Completed, st.Failed, st.Emitted)
	}
	if got := pool.DoubleReleases() - before; got != uint64(misuses.Load()) {
		t.Errorf("counted misuses %d, want %d", got, misuses.Load())
	}
	committedBelow(t, cl.Addr(), parts, n, s)
}

// TestFaultAttack2AsyncSinkFinishesAndReturnsError: a user-written async sink ends a record's
// Done and also returns an error for it (the natural "done.Nack(err); return err"): the Done
// docs say it must not, so it is a misuse to count, but it must not finish another record's
// event nor leave one unfinished: every other record (acked correctly) completes and the
// commits reach the end.
func TestFaultAttack2AsyncSinkFinishesAndReturnsError(t *testing.T) {
	const n, parts = 200, 1
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	var wg sync.WaitGroup
	before := pool.DoubleReleases()
	r := startAsync(t, cl.Addr(), func(_ context.Context, ev *stage.Event, done stage.Done) error {
		v := string(ev.Value)
		if ev.Offset%50 == 7 {
			s.add(v)
			err := errors.New("bad record")
			done.Nack(err)
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Millisecond)
			s.add(v)
			done.Ack()
		}()
		return nil
	}, nil, pipeline.WithDrainTimeout(2*time.Second), pipeline.WithCloseTimeout(2*time.Second))
	defer func() {
		r.stop()
		err := awaitRun(t, r.done, 20*time.Second)
		wg.Wait()
		st := r.p.Stats()
		t.Logf("Run: %v; emitted %d completed %d failed %d; misuses counted %d", err, st.Emitted, st.Completed, st.Failed, pool.DoubleReleases()-before)
	}()
	kafkatest.WaitFor(t, 20*time.Second, "all processed", func() bool { return s.distinct() == n })
	kafkatest.WaitFor(t, 15*time.Second, "commits to reach the end", func() bool { return committedOr(cl.Addr(), parts) == n })
	if st := r.p.Stats(); st.Completed+st.Failed != st.Emitted || st.InFlightEvents != 0 {
		t.Fatalf("completed %d + failed %d vs emitted %d, in flight %d", st.Completed, st.Failed, st.Emitted, st.InFlightEvents)
	}
}

// progress runs source "in" (4 partitions, 200 records of 37 keys) through the stages wire
// builds, whose sink records values into s. Without Linger the last records of a topic may wait
// in a partial batch until the pipeline stops (BatchConfig), so it asserts that every record is
// emitted and at most tail stay in flight within 20 s; then Run is cancelled: it returns nil,
// every record reached the sink and the commits reach the end.
func progress(t *testing.T, tail int64, mod func(*kafka.Config), wire func(b *pipeline.Builder, s *seen)) {
	t.Helper()
	const n, parts = 200, 4
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	src := attackSource(t, cl.Addr(), mod)
	b := pipeline.New(src, append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()),
		pipeline.WithDrainTimeout(2*time.Second), pipeline.WithCloseTimeout(2*time.Second))...)
	s := newSeen()
	wire(b, s)
	p, err := b.Build()
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	end := time.Now().Add(20 * time.Second)
	for st := p.Stats(); st.Emitted < n || st.InFlightEvents > tail; st = p.Stats() {
		if time.Now().After(end) {
			cancel()
			err := awaitRun(t, done, 20*time.Second)
			t.Fatalf("no progress: emitted %d of %d, %d in flight (tail allowed %d), %d processed; Run then: %v", st.Emitted, n, st.InFlightEvents, tail, s.distinct(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := awaitRun(t, done, 20*time.Second); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if miss := s.missing(want); len(miss) > 0 {
		t.Fatalf("%d records never processed", len(miss))
	}
	if c := committedOr(cl.Addr(), parts); c != n {
		t.Fatalf("committed %d, want %d", c, n)
	}
}

func batchSink(s *seen) func(context.Context, []*stage.Event) error {
	return func(_ context.Context, evs []*stage.Event) error {
		for _, ev := range evs {
			s.add(string(ev.Value))
		}
		return nil
	}
}

// TestFaultAttack2Combos: configurations Build accepts must make progress.
func TestFaultAttack2Combos(t *testing.T) {
	t.Run("BatchAfterFlatMap", func(t *testing.T) {
		progress(t, 7, nil, func(b *pipeline.Builder, s *seen) {
			kids := pipeline.Then(b.Source(), stage.FlatMap("fan", func(_ context.Context, ev *stage.Event) ([]*stage.Event, error) {
				return []*stage.Event{ev, ev}, nil
			}))
			pipeline.To(pipeline.Then(kids, stage.Batch("batch", stage.BatchConfig[*stage.Event]{MaxCount: 8})), stage.Sink("sink", batchSink(s)))
		})
	})
	t.Run("BatchOfBatch", func(t *testing.T) {
		progress(t, 15, nil, func(b *pipeline.Builder, s *seen) {
			b1 := pipeline.Then(b.Source(), stage.Batch("b1", stage.BatchConfig[*stage.Event]{MaxCount: 4}))
			b2 := pipeline.Then(b1, stage.Batch("b2", stage.BatchConfig[[]*stage.Event]{MaxCount: 4}))
			pipeline.To(b2, stage.Sink("sink", func(ctx context.Context, bs [][]*stage.Event) error {
				for _, evs := range bs {
					_ = batchSink(s)(ctx, evs)
				}
				return nil
			}))
		})
	})
	t.Run("Capacity1Concurrency8", func(t *testing.T) {
		progress(t, 0, nil, func(b *pipeline.Builder, s *seen) {
			m := pipeline.Then(b.Source(), stage.Map("m", func(_ context.Context, ev *stage.Event) (*stage.Event, error) { return ev, nil },
				stage.WithCapacity(1), stage.WithConcurrency(8)))
			pipeline.To(m, stage.Sink("sink", func(_ context.Context, ev *stage.Event) error { s.add(string(ev.Value)); return nil },
				stage.WithCapacity(1), stage.WithConcurrency(8)))
		})
	})
	t.Run("Span1OrderKeyBatch2", func(t *testing.T) {
		progress(t, 1, func(c *kafka.Config) { c.MaxInFlightPerPartition = 1 }, func(b *pipeline.Builder, s *seen) {
			pipeline.To(pipeline.Then(b.Source(), stage.Batch("batch", stage.BatchConfig[*stage.Event]{MaxCount: 2})), stage.Sink("sink", batchSink(s)))
		})
	})
	t.Run("FlatMapBatchCapacity1", func(t *testing.T) {
		progress(t, 15, func(c *kafka.Config) { c.MaxInFlightPerPartition = 2 }, func(b *pipeline.Builder, s *seen) {
			kids := pipeline.Then(b.Source(), stage.FlatMap("fan", func(_ context.Context, ev *stage.Event) ([]*stage.Event, error) {
				return []*stage.Event{ev, ev, ev}, nil
			}, stage.WithCapacity(1)))
			pipeline.To(pipeline.Then(kids, stage.Batch("batch", stage.BatchConfig[*stage.Event]{MaxCount: 16}, stage.WithCapacity(1))), stage.Sink("sink", batchSink(s), stage.WithCapacity(1)))
		})
	})
}
