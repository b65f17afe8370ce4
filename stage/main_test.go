package stage_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pipeline"
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

// offsets is a source of n events whose Offset (and one-byte Value) identify them.
func offsets(n int64) *pipeline.MemSource {
	return pipeline.Generate(n, func(i int64, ev *stage.Event) { ev.Value = append(ev.Value[:0], byte(i)) })
}

// offsetOf is the usual first stage: events must not outlive a stage, so carry the offset.
func offsetOf(_ context.Context, ev *stage.Event) (int64, error) { return ev.Offset, nil }

// completions records every completion of a MemSource, per offset.
type completions struct {
	mu       sync.Mutex
	ok, bad  map[int64]int
	sequence []int64
}

func track(src *pipeline.MemSource) *completions {
	c := &completions{ok: map[int64]int{}, bad: map[int64]int{}}
	src.OnComplete = func(ev *stage.Event, ok bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if ok {
			c.ok[ev.Offset]++
		} else {
			c.bad[ev.Offset]++
		}
		c.sequence = append(c.sequence, ev.Offset)
	}
	return c
}

// exactlyOnceOK checks that offsets 0..n-1 each completed exactly once, ok, except those in
// notOK, which completed exactly once not ok.
func (c *completions) exactlyOnceOK(t *testing.T, n int64, notOK ...int64) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range n {
		want := map[bool]int{true: 1}
		if slices.Contains(notOK, i) {
			want = map[bool]int{false: 1}
		}
		if c.ok[i] != want[true] || c.bad[i] != want[false] {
			t.Errorf("offset %d completed ok %d times, not ok %d times; want ok %d, not ok %d", i, c.ok[i], c.bad[i], want[true], want[false])
		}
	}
	if len(c.sequence) != int(n) {
		t.Errorf("%d completions, want %d", len(c.sequence), n)
	}
}

// failure is a copy of a *stage.Failure (its Events must not be retained).
type failure struct {
	stage    string
	err      error
	attempts int
	offsets  []int64
}

// failures is an error handler that records what it gets and returns answer.
type failures struct {
	mu     sync.Mutex
	list   []failure
	answer error
}

func (fs *failures) handle(_ context.Context, f *stage.Failure) error {
	c := failure{stage: f.Stage, err: f.Err, attempts: f.Attempts}
	for _, ev := range f.Events {
		c.offsets = append(c.offsets, ev.Offset)
	}
	fs.mu.Lock()
	fs.list = append(fs.list, c)
	fs.mu.Unlock()
	return fs.answer
}

func (fs *failures) all() []failure {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return slices.Clone(fs.list)
}

// build builds b or fails the test.
func build(t *testing.T, b *pipeline.Builder) *pipeline.Pipeline {
	t.Helper()
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// stageStats returns the stats of the named stage.
func stageStats(t *testing.T, p *pipeline.Pipeline, name string) stage.Stats {
	t.Helper()
	for _, st := range p.Stats().Stages {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no stage %q", name)
	return stage.Stats{}
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
