package pipeline_test

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestMain fails the package when a goroutine outlives the tests. IgnoreCurrent only skips
// what exists before any test runs: the default pool ants creates when it is imported.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// waitFor polls cond until it holds, failing the test after a generous deadline. It is for
// states that have no signal of their own (a queue that filled, a counter that settled).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(100 * time.Microsecond) // poll interval, not synchronisation
	}
}

// sized is a source of n events of size bytes each; event i has Offset i.
func sized(n int64, size int) *pipeline.MemSource {
	payload := make([]byte, size)
	return pipeline.Generate(n, func(_ int64, ev *stage.Event) { ev.Value = payload })
}

func offsetOf(_ context.Context, ev *stage.Event) (int64, error) { return ev.Offset, nil }

// gate blocks the stage functions that call pass until open is called, and reports each
// entry on entered.
type gate struct {
	entered chan int64
	release chan struct{}
	once    sync.Once
}

func newGate() *gate { return &gate{entered: make(chan int64, 4096), release: make(chan struct{})} }

func (g *gate) pass(ctx context.Context, v int64) error {
	g.entered <- v
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

// awaitEntries waits until n calls entered the gate.
func (g *gate) awaitEntries(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-g.entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %d calls to enter the gate", n)
		}
	}
}

// completions records every completion of a MemSource, per offset.
type completions struct {
	mu      sync.Mutex
	ok, bad map[int64]int
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
	}
	return c
}

// allOKOnce checks that offsets 0..n-1 each completed exactly once, ok, and nothing else did.
func (c *completions) allOKOnce(t *testing.T, n int64) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range n {
		if c.ok[i] != 1 || c.bad[i] != 0 {
			t.Fatalf("offset %d completed ok %d times, not ok %d times; want ok once", i, c.ok[i], c.bad[i])
		}
	}
	if len(c.ok) != int(n) || len(c.bad) != 0 {
		t.Fatalf("%d offsets completed ok, %d not ok; want %d ok", len(c.ok), len(c.bad), n)
	}
}

// start runs p in the background; the returned function waits for Run's result. If the test
// ends early, unblock (opening gates, cancelling contexts) runs and Run is awaited, so a
// failed test does not leave the pipeline running.
func start(t *testing.T, ctx context.Context, p *pipeline.Pipeline, unblock func()) (wait func() error) {
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	var (
		once sync.Once
		err  error
	)
	wait = func() error {
		once.Do(func() { err = <-errc })
		return err
	}
	t.Cleanup(func() { unblock(); _ = wait() })
	return wait
}

func build(t *testing.T, b *pipeline.Builder) *pipeline.Pipeline {
	t.Helper()
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func stageStats(t *testing.T, s pipeline.Snapshot, name string) stage.Stats {
	t.Helper()
	for _, st := range s.Stages {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no stage %q in snapshot", name)
	return stage.Stats{}
}

// payloadSize counts a record's own bytes (key, value, header names and values), without the
// per-event and per-header overheads of pipeline.EventSize: for tests whose budget is an exact
// byte count.
func payloadSize(ev *stage.Event) int64 {
	n := len(ev.Key) + len(ev.Value)
	for i := range ev.Headers {
		n += len(ev.Headers[i].Key) + len(ev.Headers[i].Value)
	}
	return int64(n)
}
