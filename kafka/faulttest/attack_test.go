package faulttest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
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
	}, stage.Capacity(4)))
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
	if c := committedOr(cl.Addr(), 1); c > 0 {
		t.Fatalf("committed %d: no event was handled", c)
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
