package flow_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// TestMain fails the package when a goroutine outlives the tests. IgnoreCurrent only skips
// what exists before any test runs: the default pool ants creates when it is imported.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// setDebug sets pool's debug mode for one test and restores it after.
func setDebug(t *testing.T, on bool) {
	t.Helper()
	was := pool.Debug()
	pool.SetDebug(on)
	t.Cleanup(func() { pool.SetDebug(was) })
}

// mustPanicMisuse runs fn and fails unless it panics with a *pool.MisuseError.
func mustPanicMisuse(t *testing.T, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if err, ok := r.(error); !ok || !errors.As(err, new(*pool.MisuseError)) {
			t.Fatalf("recovered %v (%T), want a *pool.MisuseError", r, r)
		}
	}()
	fn()
}

// life returns the engine's lifecycle of ev.
func life(ev *stage.Event) *flow.Life { return flow.Hooks.Life(ev) }

// coreOf returns the engine stage behind a public stage.
func coreOf[In, Out any](st *stage.Stage[In, Out]) *flow.Stage[In, Out] {
	return flow.Hooks.Core(st).(*flow.Stage[In, Out])
}

// finisher records completions and releases the events, as the pipeline does.
type finisher struct {
	mu  sync.Mutex
	oks []bool
}

func (f *finisher) Finish(l *flow.Life, ok bool) {
	f.mu.Lock()
	f.oks = append(f.oks, ok)
	f.mu.Unlock()
	l.Owner.(*stage.Event).Release()
}

func (f *finisher) count() (ok, bad int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.oks {
		if o {
			ok++
		} else {
			bad++
		}
	}
	return ok, bad
}

// manyFinisher is a finisher that also finishes several events in one call (ManyFinisher), as
// the pipeline does.
type manyFinisher struct {
	finisher
	calls int // FinishMany calls
}

func (f *manyFinisher) FinishMany(ls []*flow.Life, ok []bool) {
	f.mu.Lock()
	f.calls++
	f.oks = append(f.oks, ok...)
	f.mu.Unlock()
	// No Release: the events are retired, and the worker recycles them.
}

func (f *manyFinisher) manyCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// emitted returns a pooled event prepared for emission with fin (1 budget byte).
func emitted(fin flow.Finisher) *stage.Event {
	ev := stage.GetEvent()
	life(ev).Begin("", 0, 0, 0, 1, fin)
	return ev
}

// begun returns n events with Offset i, prepared for emission with fin, and their lifecycles.
func begun(n int, fin flow.Finisher) ([]*stage.Event, []*flow.Life) {
	evs, ls := make([]*stage.Event, n), make([]*flow.Life, n)
	for i := range evs {
		evs[i] = stage.GetEvent()
		evs[i].Offset = int64(i)
		ls[i] = life(evs[i])
		ls[i].Begin("", 0, int64(i), 0, 1, fin)
	}
	return evs, ls
}

// testEnv is a flow.Env that runs tasks on plain goroutines, for driving a stage directly.
func testEnv(t *testing.T, wg *sync.WaitGroup) *flow.Env {
	return &flow.Env{
		Ctx:    t.Context(),
		Go:     func(task func()) error { wg.Go(task); return nil },
		Fail:   func(err error) { t.Errorf("unexpected fatal error: %v", err) },
		Handle: func(_ context.Context, f error) error { t.Errorf("unexpected failure: %v", f); return nil },
		Logger: quiet,
	}
}
