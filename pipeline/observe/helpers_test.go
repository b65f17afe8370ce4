package observe

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// fakeSource is a Source whose readiness and summary the test sets.
type fakeSource struct {
	notReady atomic.Pointer[error]
	sum      SourceSummary
	up       prometheus.Gauge
}

func newFakeSource(sum SourceSummary) *fakeSource {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "fake_source_up", Help: "Test source."})
	g.Set(1)
	return &fakeSource{sum: sum, up: g}
}

func (f *fakeSource) Describe(ch chan<- *prometheus.Desc) { f.up.Describe(ch) }
func (f *fakeSource) Collect(ch chan<- prometheus.Metric) { f.up.Collect(ch) }
func (f *fakeSource) Summary() SourceSummary              { return f.sum }
func (f *fakeSource) Ready() error {
	if e := f.notReady.Load(); e != nil {
		return *e
	}
	return nil
}
func (f *fakeSource) setNotReady(msg string) {
	if msg == "" {
		f.notReady.Store(nil)
		return
	}
	err := errors.New(msg)
	f.notReady.Store(&err)
}

// syncBuffer is a bytes.Buffer safe for a logger writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond every 5 ms until it holds, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// gatedPipeline builds Generate(n) → Map "parse" → Sink "store" where the sink blocks in
// stuckInUserCode on the event at offset stuckAt until release is closed.
func gatedPipeline(t *testing.T, n, stuckAt int64, release <-chan struct{}, opts ...pipeline.Option) *pipeline.Pipeline {
	t.Helper()
	src := pipeline.Generate(n, func(i int64, ev *stage.Event) { ev.Topic, ev.Partition, ev.Value = "orders", 2, []byte("0123456789") })
	b := pipeline.New(src, append([]pipeline.Option{pipeline.WithLogger(quiet())}, opts...)...)
	s := pipeline.Then(b.Source(), stage.Map("parse", func(_ context.Context, ev *stage.Event) (int64, error) { return ev.Offset, nil }))
	pipeline.To(s, stage.Sink("store", func(ctx context.Context, off int64) error {
		if off == stuckAt {
			return stuckInUserCode(ctx, release)
		}
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// stuckInUserCode blocks until release is closed: the stall's stack must name it.
//
//go:noinline
func stuckInUserCode(ctx context.Context, release <-chan struct{}) error {
	select {
	case <-release:
	case <-ctx.Done():
	}
	return nil
}

// runBoth runs the monitor and the pipeline until the test ends (or stop is called), and
// returns stop, which cancels both and waits for them.
func runBoth(t *testing.T, m *Monitor, p *pipeline.Pipeline) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = m.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			t.Errorf("pipeline: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// get serves path on mux and returns the status and body.
func get(mux *http.ServeMux, path string) (int, string) {
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}
