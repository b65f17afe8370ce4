package stage_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestAsyncSinkNackReturnsBeforeTheHandlerRuns: Nack queues the error policy on the pipeline's
// error-handling goroutine and returns at once, so an error handler may wait for the goroutine
// that called Nack (as a dead-letter handler waits on the producer whose report reader Nacks).
// Had the handler run inside Nack, it would wait for itself.
func TestAsyncSinkNackReturnsBeforeTheHandlerRuns(t *testing.T) {
	const n = 20
	nacked := make(chan struct{})
	a := newAcker(func(d delivery) {
		if d.v == 3 {
			d.done.Nack(errors.New("delivery failed"))
			close(nacked) // only once Nack returned
			return
		}
		d.done.Ack()
	})
	src := offsets(n)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithErrorHandler(func(ctx context.Context, f *stage.Failure) error {
		select {
		case <-nacked:
			return nil
		case <-time.After(5 * time.Second):
			return errors.New("the error handler ran before Nack returned")
		}
	}))
	pipeline.To(pipeline.Then(b.Source(), stage.Map("offset", offsetOf)), stage.AsyncSink("produce", a.produce, stage.WithClose(a.close)))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	done.exactlyOnceOK(t, n)
}

// TestCloseGivesUpOnAStuckErrorHandler: an error handler that retries until its context ends
// (a dead-letter topic that keeps refusing) does not hold Run: when the close timeout expires
// its context is cancelled, Run returns an error, and the event is completed not ok (not
// committed); every other event completed ok.
func TestCloseGivesUpOnAStuckErrorHandler(t *testing.T) {
	const n, closeTimeout = 10, 300 * time.Millisecond
	a := newAcker(func(d delivery) {
		if d.v == 4 {
			d.done.Nack(stage.ErrNotDelivered)
			return
		}
		d.done.Ack()
	})
	src := offsets(n)
	done := track(src)
	called := make(chan struct{})
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithCloseTimeout(closeTimeout),
		pipeline.WithErrorHandler(func(ctx context.Context, f *stage.Failure) error {
			close(called)
			<-ctx.Done()
			return ctx.Err()
		}))
	pipeline.To(pipeline.Then(b.Source(), stage.Map("offset", offsetOf)), stage.AsyncSink("produce", a.produce, stage.WithClose(a.close)))
	p := build(t, b)
	ran := make(chan error, 1)
	began := time.Now()
	go func() { ran <- p.Run(context.Background()) }()
	var err error
	select {
	case err = <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return: the stuck error handler held it")
	}
	<-called
	if err == nil || !strings.Contains(err.Error(), "unfinished") {
		t.Fatalf("Run = %v, want the close-timeout error", err)
	}
	if d := time.Since(began); d > closeTimeout+5*time.Second {
		t.Fatalf("Run took %v with a close timeout of %v", d, closeTimeout)
	}
	done.exactlyOnceOK(t, n, 4)
}

// TestDefaultHandlerStopsOnNotDelivered: the default error handler skips a failure, except one
// whose output record was not written (stage.ErrNotDelivered): Run stops with an error naming
// the record, and that record's event is not completed ok.
func TestDefaultHandlerStopsOnNotDelivered(t *testing.T) {
	const n = 10
	src := pipeline.Generate(n, func(i int64, ev *stage.Event) { ev.Topic, ev.Partition = "in", 3 })
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	pipeline.To(b.Source(), stage.Sink("write", func(_ context.Context, ev *stage.Event) error {
		switch ev.Offset {
		case 2:
			return errors.New("bad input") // skipped by the default handler
		case 6:
			return errors.Join(errors.New("write failed"), stage.ErrNotDelivered)
		}
		return nil
	}))
	err := build(t, b).Run(context.Background())
	if !errors.Is(err, stage.ErrNotDelivered) || !strings.Contains(err.Error(), `stage "write": in[3]@6: `) {
		t.Fatalf("Run = %v, want ErrNotDelivered naming in[3]@6", err)
	}
	done.mu.Lock()
	defer done.mu.Unlock()
	if done.ok[2] != 1 || done.ok[6] != 0 || done.bad[6] != 1 {
		t.Fatalf("offset 2 ok %d (want 1: skipped); offset 6 ok %d, not ok %d (want 0, 1)", done.ok[2], done.ok[6], done.bad[6])
	}
}
