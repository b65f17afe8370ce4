// Package workers runs tasks on a bounded ants pool: Submit blocks while Size tasks run, panics
// are recovered and reported, and Close waits for the running tasks within its context.
package workers

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/panjf2000/ants/v2"
)

// releaseWait bounds how long Close waits for idle ants goroutines to exit.
const releaseWait = 5 * time.Second

// ErrClosed is returned by Submit after Close.
var ErrClosed = errors.New("sluice/workers: workers closed")

// PanicError is a panic recovered from a task, with the stack of the goroutine that panicked.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("panic: %v\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic value when it is an error, so errors.Is/As see through the panic.
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

// WorkersOption configures NewWorkers.
type WorkersOption func(*workersConfig)

type workersConfig struct {
	size    int
	onPanic func(*PanicError)
}

// Size sets how many tasks may run at once. Default: runtime.GOMAXPROCS(0). A value below 1
// makes NewWorkers fail.
func Size(n int) WorkersOption { return func(c *workersConfig) { c.size = n } }

// OnPanic sets the function that receives a panic recovered from a task. Default: none, and
// the first panic is returned by Close (panics are never swallowed).
func OnPanic(fn func(*PanicError)) WorkersOption { return func(c *workersConfig) { c.onPanic = fn } }

// Workers runs tasks on a bounded ants pool with bounded admission: at most Size tasks run, and
// a Submit beyond that blocks (honouring its context) instead of queueing without limit. ants's
// own MaxBlockingTasks default of 0 (unlimited parked submitters) is never relied on.
type Workers struct {
	ants  *ants.Pool
	slots chan struct{} // a token per running task; its capacity is Size
	cfg   workersConfig

	mu       sync.Mutex // guards closed and firstErr
	closed   bool
	firstErr error
	done     chan struct{} // closed by Close
	running  sync.WaitGroup
}

// NewWorkers returns a started worker pool. Close it when done.
func NewWorkers(opts ...WorkersOption) (*Workers, error) {
	cfg := workersConfig{size: runtime.GOMAXPROCS(0)}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.size < 1 {
		return nil, fmt.Errorf("sluice/workers: Size must be at least 1, got %d", cfg.size)
	}
	// The slots channel is the admission bound. ants may briefly see a worker still busy
	// after its task released its slot; MaxBlockingTasks lets that race wait instead of
	// failing, and bounds it to Size waiters.
	p, err := ants.NewPool(cfg.size, ants.WithMaxBlockingTasks(cfg.size), ants.WithPanicHandler(func(any) {}))
	if err != nil {
		return nil, fmt.Errorf("sluice/workers: %w", err)
	}
	return &Workers{ants: p, slots: make(chan struct{}, cfg.size), cfg: cfg, done: make(chan struct{})}, nil
}

// Size reports the maximum number of tasks that run at once.
func (w *Workers) Size() int { return w.cfg.size }

// Running reports how many submitted tasks have not returned yet.
func (w *Workers) Running() int { return len(w.slots) }

// Submit runs task on a worker. It blocks while Size tasks are running, until a worker frees,
// ctx is done (returns ctx.Err()) or the pool is closed (returns ErrClosed). A task that
// panics is recovered; the panic goes to OnPanic, or is returned by Close.
func (w *Workers) Submit(ctx context.Context, task func()) error {
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.done:
		return ErrClosed
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.slots
		return ErrClosed
	}
	w.running.Add(1)
	w.mu.Unlock()
	err := w.ants.Submit(func() {
		defer func() {
			if r := recover(); r != nil {
				w.panicked(&PanicError{Value: r, Stack: debug.Stack()})
			}
			<-w.slots
			w.running.Done()
		}()
		task()
	})
	if err != nil {
		<-w.slots
		w.running.Done()
		return fmt.Errorf("sluice/workers: submit: %w", err)
	}
	return nil
}

func (w *Workers) panicked(p *PanicError) {
	if w.cfg.onPanic != nil {
		w.cfg.onPanic(p)
		return
	}
	w.mu.Lock()
	if w.firstErr == nil {
		w.firstErr = p
	}
	w.mu.Unlock()
}

// Close stops admission, waits for running tasks to return (or ctx to be done) and releases
// the ants pool. It returns the first recovered panic when no OnPanic was set, or ctx.Err()
// when the tasks did not return in time. Close is idempotent.
func (w *Workers) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.done)
	}
	w.mu.Unlock()
	finished := make(chan struct{})
	go func() { w.running.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
		// Tasks still running (stuck in user code): stop ants' own goroutines (purge, clock)
		// now; each task's goroutine ends when its task returns.
		w.ants.Release()
		return ctx.Err()
	}
	// ReleaseTimeout waits for the ants goroutines themselves to exit, so none outlives Close.
	if err := w.ants.ReleaseTimeout(releaseWait); err != nil && !errors.Is(err, ants.ErrPoolClosed) {
		return fmt.Errorf("sluice/workers: release: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.firstErr
}
