package workers_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/workers"
)

func newWorkers(t *testing.T, opts ...workers.WorkersOption) *workers.Workers {
	t.Helper()
	w, err := workers.NewWorkers(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	return w
}

func TestNewWorkersRejectsSizeBelowOne(t *testing.T) {
	for _, n := range []int{0, -3} {
		w, err := workers.NewWorkers(workers.Size(n))
		if err == nil {
			_ = w.Close(context.Background())
			t.Fatalf("NewWorkers(Size(%d)) succeeded, want an error", n)
		}
		if !strings.Contains(err.Error(), "Size") {
			t.Fatalf("NewWorkers(Size(%d)) error %q does not name Size", n, err)
		}
	}
}

func TestWorkersDefaultSizeIsPositive(t *testing.T) {
	if w := newWorkers(t); w.Size() < 1 {
		t.Fatalf("default Size() = %d", w.Size())
	}
}

func TestWorkersSubmitBlocksAtSizeUntilCtxDone(t *testing.T) {
	const size = 2
	w := newWorkers(t, workers.Size(size))
	release := make(chan struct{})
	for range size {
		if err := w.Submit(context.Background(), func() { <-release }); err != nil {
			t.Fatal(err)
		}
	}
	// Admission is taken synchronously by Submit, so both slots are held now.
	if got := w.Running(); got != size {
		t.Fatalf("Running() = %d with %d blocked tasks", got, size)
	}
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	var ran atomic.Bool
	go func() { res <- w.Submit(ctx, func() { ran.Store(true) }) }()
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit on a full pool after cancel = %v, want context.Canceled", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer dcancel()
	if err := w.Submit(dctx, func() { ran.Store(true) }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Submit on a full pool with a deadline = %v, want DeadlineExceeded", err)
	}
	if ran.Load() {
		t.Fatal("a task rejected by Submit ran")
	}

	// A blocked Submit proceeds as soon as a slot frees.
	third := make(chan struct{})
	go func() { res <- w.Submit(context.Background(), func() { close(third) }) }()
	close(release)
	if err := <-res; err != nil {
		t.Fatalf("Submit after a slot freed = %v", err)
	}
	<-third
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := w.Running(); got != 0 {
		t.Fatalf("Running() = %d after Close", got)
	}
}

func TestWorkersNeverRunMoreThanSize(t *testing.T) {
	const size = 3
	w := newWorkers(t, workers.Size(size))
	var running, peak atomic.Int32
	for range 200 {
		err := w.Submit(context.Background(), func() {
			n := running.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(10 * time.Microsecond) // simulated work
			running.Add(-1)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := peak.Load(); p < 1 || p > size {
		t.Fatalf("peak concurrency %d, want 1..%d", p, size)
	}
}

func TestWorkersCloseReturnsTaskPanicAsPanicError(t *testing.T) {
	w := newWorkers(t, workers.Size(2))
	boom := errors.New("boom")
	if err := w.Submit(context.Background(), func() { panic(boom) }); err != nil {
		t.Fatal(err)
	}
	if err := w.Submit(context.Background(), func() {}); err != nil {
		t.Fatal(err)
	}
	err := w.Close(context.Background())
	var pe *workers.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Close = %v, want a *workers.PanicError", err)
	}
	if pe.Value != boom || !errors.Is(err, boom) {
		t.Fatalf("PanicError.Value = %v, want the panic value (and errors.Is to see it)", pe.Value)
	}
	if !strings.Contains(string(pe.Stack), "TestWorkersCloseReturnsTaskPanicAsPanicError") {
		t.Fatalf("PanicError.Stack does not show the panicking task:\n%s", pe.Stack)
	}
	if err := w.Close(context.Background()); !errors.As(err, &pe) {
		t.Fatalf("second Close = %v, want the same panic (Close is idempotent)", err)
	}
}

func TestWorkersOnPanicReceivesPanicAndCloseReturnsNil(t *testing.T) {
	var (
		mu  sync.Mutex
		got []*workers.PanicError
	)
	w := newWorkers(t, workers.Size(1), workers.OnPanic(func(pe *workers.PanicError) {
		mu.Lock()
		got = append(got, pe)
		mu.Unlock()
	}))
	for range 2 {
		if err := w.Submit(context.Background(), func() { panic("not an error") }); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatalf("Close with OnPanic = %v, want nil", err)
	}
	if len(got) != 2 || got[0].Value != "not an error" || got[0].Unwrap() != nil {
		t.Fatalf("OnPanic got %v", got)
	}
}

func TestWorkersSubmitAfterCloseReturnsErrClosed(t *testing.T) {
	w := newWorkers(t, workers.Size(1))
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Submit(context.Background(), func() { t.Error("ran after Close") }); !errors.Is(err, workers.ErrClosed) {
		t.Fatalf("Submit after Close = %v, want ErrClosed", err)
	}
}

func TestWorkersCloseHonoursCtxWhileTasksRun(t *testing.T) {
	w := newWorkers(t, workers.Size(1))
	release := make(chan struct{})
	if err := w.Submit(context.Background(), func() { <-release }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close with a done ctx while a task runs = %v, want context.Canceled", err)
	}
	close(release)
	if err := w.Close(context.Background()); err != nil {
		t.Fatalf("Close after the task returned = %v", err)
	}
}
