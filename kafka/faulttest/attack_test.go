package faulttest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Adversarial probes of issue 12's guarantees, written from the README as a user would.

// attackSource is a source on topic "in" of cl with the suite's fast group settings.
func attackSource(t *testing.T, addr string, mod func(*kafka.Config)) *kafka.Source {
	t.Helper()
	cfg := kafka.Config{Brokers: addr, GroupID: "g", Topics: []string{"in"}, Overrides: kafkatest.FastGroup(),
		CommitInterval: 100 * time.Millisecond, Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10}
	if mod != nil {
		mod(&cfg)
	}
	src, err := kafka.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestFaultAttackPanickingErrorHandler: an error handler that panics (user code, like a stage)
// while a stage upstream of the failing one keeps sending. The README: "A panic becomes an
// error naming the stage, with its stack; the process lives" and "Graceful shutdown ... No
// goroutine outlives Run". Run must return (with an error) within drain + close timeouts.
func TestFaultAttackPanickingErrorHandler(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const drain, closeT = 2 * time.Second, 2 * time.Second
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1))
	produce(t, cl.Addr(), "in", "v", 500)
	src := attackSource(t, cl.Addr(), nil)
	b := pipeline.New(src, append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()),
		pipeline.WithDrainTimeout(drain), pipeline.WithCloseTimeout(closeT),
		pipeline.WithErrorHandler(func(_ context.Context, f *stage.Failure) error {
			if f.Events[0].Origin().Offset >= 20 {
				panic("handler bug")
			}
			return nil
		}))...)
	decoded := pipeline.Then(b.Source(), stage.Map("decode", func(_ context.Context, ev *stage.Event) (*stage.Event, error) { return ev, nil }))
	// The failing stage is slow: by the time its handler panics, "decode" has filled the
	// failing stage's input edge and waits to send one more.
	pipeline.To(decoded, stage.Sink("work", func(context.Context, *stage.Event) error {
		time.Sleep(5 * time.Millisecond)
		return errors.New("poison")
	}, stage.WithCapacity(4)))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	err = awaitRun(t, done, drain+closeT+15*time.Second)
	if err == nil {
		t.Fatal("Run = nil after the error handler panicked")
	}
	t.Logf("Run: %.200v", err)
	// Offsets below 20 were handled (the handler returned nil); offset 20's handler panicked:
	// the commit must stop there.
	if c := committedOr(cl.Addr(), 1); c > 20 {
		t.Fatalf("committed %d: past offset 20, whose error handler panicked", c)
	}
}

// TestFaultAttackPanickingErrorHandlerAsync: the same panicking error handler, reached through
// the producer sink's Nack (the delivery to "out" fails after message.timeout.ms), so it runs
// on the pipeline's error-handling goroutine. The process must live and Run must return an
// error. The scenario runs in a child process (this test binary, re-executed), so a crash
// fails this test instead of killing the suite.
func TestFaultAttackPanickingErrorHandlerAsync(t *testing.T) {
	if os.Getenv("SLUICE_ATTACK_CHILD") != "" {
		asyncPanicChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFaultAttackPanickingErrorHandlerAsync$", "-test.v")
	cmd.Env = append(os.Environ(), "SLUICE_ATTACK_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := out[max(0, len(out)-1500):]
		if i := bytes.Index(out, []byte("panic: ")); i >= 0 {
			tail = out[i:min(len(out), i+1500)]
		}
		t.Fatalf("child: %v (the process died or the scenario failed):\n%s", err, tail)
	}
}

func asyncPanicChild(t *testing.T) {
	const drain, closeT = 2 * time.Second, 2 * time.Second
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1), kafkatest.Topic("out", 1))
	produce(t, cl.Addr(), "in", "v", 5)
	refuseProduce(cl, "out")
	r := startCopy(t, cl.Addr(), copyOpts{timeout: 500, pipe: []pipeline.Option{
		pipeline.WithDrainTimeout(drain), pipeline.WithCloseTimeout(closeT),
		pipeline.WithErrorHandler(func(context.Context, *stage.Failure) error { panic("handler bug") }),
	}})
	err := awaitRun(t, r.done, 30*time.Second)
	if err == nil {
		t.Fatal("Run = nil after the error handler panicked")
	}
	t.Logf("Run: %.200v", err)
	if c := committedOr(cl.Addr(), 1); c > 0 {
		t.Fatalf("committed %d: nothing was written", c)
	}
}

// TestFaultAttackSpanOneBatchNoLinger: MaxInFlightPerPartition 1 (the span bound is then one
// record) under OrderNone, with a Batch of 8 and no Linger: Build accepts it, so it must make
// progress (the partial batch is flushed when the source cannot admit more).
func TestFaultAttackSpanOneBatchNoLinger(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const n, parts = 60, 2
	cl := kafkatest.StartT(t, kafkatest.Topic("in", parts))
	want := produce(t, cl.Addr(), "in", "v", n)
	src := attackSource(t, cl.Addr(), func(c *kafka.Config) { c.MaxInFlightPerPartition, c.Ordering = 1, kafka.OrderNone })
	b := pipeline.New(src, append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()))...)
	s := newSeen()
	batches := pipeline.Then(b.Source(), stage.Batch("batch", stage.BatchConfig[*stage.Event]{MaxCount: 8}))
	pipeline.To(batches, stage.Sink("work", func(_ context.Context, evs []*stage.Event) error {
		for _, ev := range evs {
			s.add(string(ev.Value))
		}
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	kafkatest.WaitFor(t, 30*time.Second, "every record processed", func() bool { return s.distinct() == n })
	kafkatest.WaitFor(t, 15*time.Second, "commits to reach the end", func() bool { return committedOr(cl.Addr(), parts) == n })
	cancel()
	if err := awaitRun(t, done, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if miss := s.missing(want); len(miss) > 0 {
		t.Fatalf("missing %v", miss)
	}
}

// TestFaultAttackCancelBeforeAssignment: Run's context is cancelled before the group assigned
// anything (the broker's group coordinator never answers). Run returns promptly, nil, and no
// goroutine is left.
func TestFaultAttackCancelBeforeAssignment(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1))
	src := attackSource(t, cl.Addr(), nil)
	b := pipeline.New(src, append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()), pipeline.WithCloseTimeout(2*time.Second))...)
	pipeline.To(b.Source(), stage.Sink("work", func(context.Context, *stage.Event) error { return nil }))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- p.Run(ctx) }()
	if err := awaitRun(t, done, 15*time.Second); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	t.Logf("Run returned after %v", time.Since(began).Round(time.Millisecond))
}

// TestFaultAttackRoutedEventNamesOrigin: a stage re-targets an event (it sets Topic, Partition
// and Offset, as a router might; stage.Event says the source is never misled by it), and a
// later stage fails on it. The README: the dead-letter record carries "headers naming the
// error, stage and original topic/partition/offset", and Run's error names the failing
// record's topic, partition and offset. Both must name in[0]@0, where the record came from.
func TestFaultAttackRoutedEventNamesOrigin(t *testing.T) {
	for _, dlq := range []bool{true, false} {
		t.Run(map[bool]string{true: "dead letter", false: "fail"}[dlq], func(t *testing.T) { routedEventNamesOrigin(t, dlq) })
	}
}

func routedEventNamesOrigin(t *testing.T, dlq bool) {
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1), kafkatest.Topic("dlq", 1))
	produce(t, cl.Addr(), "in", "v", 1)
	src := attackSource(t, cl.Addr(), nil)
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	opts := append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()))
	sinkOpts := []stage.Option{stage.WithErrorPolicy(stage.Fail)}
	if dlq {
		opts, sinkOpts = append(opts, pipeline.WithErrorHandler(prod.DeadLetter("dlq"))), nil
	}
	b := pipeline.New(src, opts...)
	routed := pipeline.Then(b.Source(), stage.Map("route", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
		ev.Topic, ev.Partition, ev.Offset = "orders-eu", 7, 12345
		return ev, nil
	}))
	pipeline.To(routed, stage.Sink("work", func(context.Context, *stage.Event) error { return errors.New("poison") }, sinkOpts...))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	if !dlq {
		err := awaitRun(t, done, 30*time.Second)
		if err == nil || !strings.Contains(err.Error(), "in[0]@0") {
			t.Fatalf("Run = %v, want an error naming in[0]@0", err)
		}
		return
	}
	msgs, err := kafkatest.ReadMessages(cl.Addr(), "dlq", 1, 30*time.Second)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("dead letters %d: %v", len(msgs), err)
	}
	cancel()
	if err := awaitRun(t, done, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	h := map[string]string{}
	for _, x := range msgs[0].Headers {
		h[x.Key] = string(x.Value)
	}
	if got := h[kafka.HeaderTopic] + "[" + h[kafka.HeaderPartition] + "]@" + h[kafka.HeaderOffset]; got != "in[0]@0" {
		t.Fatalf("dead letter names %s, want in[0]@0 (where the record came from)", got)
	}
}

// TestFaultAttackFlatMapChildToRefusingDeadLetter: a FlatMap fans each record out to three
// children; the sink fails the middle child of records from offset 5 on, and the dead-letter
// topic refuses with a retriable error, so the handler retries on the sink's worker. Then
// Run's context is cancelled: Run returns within drain + close, with an error, and the commit
// never passes offset 5 (its failed child was neither written nor dead-lettered), though its
// siblings succeeded.
func TestFaultAttackFlatMapChildToRefusingDeadLetter(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	const drain, closeT = 2 * time.Second, 2 * time.Second
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1), kafkatest.Topic("dlq", 1))
	produce(t, cl.Addr(), "in", "v", 20)
	refuseProduce(cl, "dlq")
	src := attackSource(t, cl.Addr(), nil)
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10,
		Overrides: map[string]any{"message.timeout.ms": 300}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) })
	b := pipeline.New(src, append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()), pipeline.WithDrainTimeout(drain),
		pipeline.WithCloseTimeout(closeT), pipeline.WithErrorHandler(prod.DeadLetter("dlq")))...)
	type child struct {
		off int64
		i   int
	}
	kids := pipeline.Then(b.Source(), stage.FlatMap("fan", func(_ context.Context, ev *stage.Event) ([]child, error) {
		return []child{{ev.Offset, 0}, {ev.Offset, 1}, {ev.Offset, 2}}, nil
	}))
	var failing atomic.Int64
	pipeline.To(kids, stage.Sink("work", func(_ context.Context, c child) error {
		if c.off >= 5 && c.i == 1 {
			failing.Add(1)
			return errors.New("poison child")
		}
		return nil
	}, stage.WithConcurrency(2)))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	kafkatest.WaitFor(t, 30*time.Second, "a child failing", func() bool { return failing.Load() > 0 })
	kafkatest.WaitFor(t, 30*time.Second, "the commit reaching 5", func() bool { return committedOr(cl.Addr(), 1) == 5 })
	cancel()
	began := time.Now()
	err = awaitRun(t, done, drain+closeT+10*time.Second)
	t.Logf("Run returned after %v: %.300v", time.Since(began).Round(time.Millisecond), err)
	if err == nil {
		t.Fatal("Run = nil: a failed child was neither written nor dead-lettered")
	}
	if c := committedOr(cl.Addr(), 1); c != 5 {
		t.Fatalf("committed %d, want 5", c)
	}
}
