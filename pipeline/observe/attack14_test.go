package observe_test

// Adversarial tests of the production kit (issue 14), written against the public API only.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pipeline/observe"
	"github.com/sluicehq/sluice/stage"
)

func a14Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func a14Get(mux *http.ServeMux, path string) (int, string) {
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func a14WaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// a14Pipeline builds Generate(n) → Sink sinkName; the sink blocks on offset stuckAt until
// release is closed (stuckAt < 0: never).
func a14Pipeline(t *testing.T, n int64, sinkName string, stuckAt int64, release <-chan struct{}) *pipeline.Pipeline {
	t.Helper()
	src := pipeline.Generate(n, func(i int64, ev *stage.Event) { ev.Topic, ev.Value = "orders", []byte("0123456789") })
	b := pipeline.New(src, pipeline.WithLogger(a14Quiet()))
	pipeline.To(b.Source(), stage.Sink(sinkName, func(ctx context.Context, ev *stage.Event) error {
		if ev.Offset == stuckAt {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAttack14StageNamedSourceScrapes: the collector labels the source's bottleneck gauge
// stage="source", so a stage of that name would give the registry two identical series and
// fail every scrape of /metrics: Build rejects the name, saying it is reserved.
func TestAttack14StageNamedSourceScrapes(t *testing.T) {
	b := pipeline.New(pipeline.FromSlice(nil), pipeline.WithLogger(a14Quiet()))
	pipeline.To(b.Source(), stage.Sink("source", func(context.Context, *stage.Event) error { return nil }))
	_, err := b.Build()
	if !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), `"source" is reserved`) {
		t.Fatalf("Build with a stage named \"source\" = %v, want an error saying the name is reserved", err)
	}
}

// TestAttack14PipelineJSONBeforeAndAfter: /debug/pipeline.json is valid JSON (no NaN, no
// Inf) before the pipeline or the Monitor ran, and after both finished with zero events.
func TestAttack14PipelineJSONBeforeAndAfter(t *testing.T) {
	p := a14Pipeline(t, 0, "store", -1, nil)
	mon := observe.New(p, observe.WithLogger(a14Quiet()), observe.WithSampleInterval(time.Millisecond), observe.WithHistory(time.Millisecond))
	mux := http.NewServeMux()
	mon.Mount(mux, true)
	check := func(when string) {
		code, body := a14Get(mux, "/debug/pipeline.json")
		if code != http.StatusOK || !json.Valid([]byte(body)) || !strings.Contains(body, `"stages"`) {
			t.Fatalf("%s: /debug/pipeline.json %d %q", when, code, body)
		}
		if code, body := a14Get(mux, "/healthz"); code != http.StatusOK {
			t.Fatalf("%s: /healthz %d %s", when, code, body)
		}
	}
	check("before Run")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mon.Run(ctx) }()
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	check("pipeline finished, monitor running")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	check("after both")
}

// TestAttack14DebugByDefault: only loopback listen addresses turn the debug pages on.
func TestAttack14DebugByDefault(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:0": true, "LOCALHOST:1": true, "[::1]:80": true, "127.1.2.3:9": true,
		"::1": true, "localhost": true, "127.0.0.1": true,
		":8080": false, "0.0.0.0:1": false, "[::]:80": false, "": false, ":0": false, "10.0.0.1:80": false,
		"example.com:80": false, "localhost.example.com:80": false, "127.0.0.1.nip.io:80": false,
		"[::ffff:0.0.0.0]:80": false, "0:8080": false,
	} {
		if got := observe.DebugByDefault(addr); got != want {
			t.Errorf("DebugByDefault(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestAttack14LivenessIdleThenStuck: /healthz fails only when events have been in flight with
// none completing for the liveness timeout. A pipeline that sat idle (nothing in flight) for
// longer than the timeout, with nobody probing, then takes an event that is still being
// processed, has not been stuck for the timeout: /healthz must stay 200 at that moment. It
// must fail once the event has been stuck for the timeout, and recover after.
func TestAttack14LivenessIdleThenStuck(t *testing.T) {
	for _, withRun := range []bool{false, true} {
		t.Run(map[bool]string{false: "without Run", true: "with Run"}[withRun], func(t *testing.T) { a14LivenessIdleThenStuck(t, withRun) })
	}
}

func a14LivenessIdleThenStuck(t *testing.T, withRun bool) {
	const liveness = 2 * time.Second
	release := make(chan struct{})
	p := a14Pipeline(t, 1, "store", 0, release)
	mon := observe.New(p, observe.WithLogger(a14Quiet()), observe.WithLivenessTimeout(liveness), observe.WithSampleInterval(50*time.Millisecond))
	mux := http.NewServeMux()
	mon.Mount(mux, false)
	if withRun {
		ctx, cancel := context.WithCancel(context.Background())
		monDone := make(chan error, 1)
		go func() { monDone <- mon.Run(ctx) }()
		defer func() { cancel(); <-monDone }()
	}
	// Idle, unprobed, for longer than the timeout (the elapsed time is what is tested).
	time.Sleep(liveness + 500*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	a14WaitFor(t, "the event in flight", func() bool { return p.Stats().InFlightEvents == 1 })
	inFlightAt := time.Now()
	code, body := a14Get(mux, "/healthz")
	if code != http.StatusOK && time.Since(inFlightAt) < liveness {
		t.Errorf("/healthz %d %q right after the first event entered (in flight for %v < liveness %v)",
			code, strings.TrimSpace(body), time.Since(inFlightAt).Round(time.Millisecond), liveness)
	}
	a14WaitFor(t, "/healthz failing on the stuck event", func() bool { c, _ := a14Get(mux, "/healthz"); return c == 503 })
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if code, body := a14Get(mux, "/healthz"); code != http.StatusOK {
		t.Fatalf("finished pipeline: /healthz %d %s", code, body)
	}
}

// TestAttack14ProgressToPipe: the progress line written to a pipe is plain lines.
func TestAttack14ProgressToPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		out bytes.Buffer
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	p := a14Pipeline(t, -1, "store", -1, nil)
	mon := observe.New(p, observe.WithLogger(a14Quiet()), observe.WithSampleInterval(10*time.Millisecond),
		observe.WithProgress(w, 10*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = mon.Run(ctx) }()
	go func() { defer wg.Done(); _ = p.Run(ctx) }()
	a14WaitFor(t, "three progress lines", func() bool { mu.Lock(); defer mu.Unlock(); return bytes.Count(out.Bytes(), []byte("\n")) >= 3 })
	cancel()
	wg.Wait()
	w.Close()
	<-readDone
	s := out.String()
	if strings.ContainsAny(s, "\r\x1b") {
		t.Fatalf("progress to a pipe has \\r or escapes: %q", s)
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if !strings.Contains(l, "in flight") {
			t.Fatalf("odd progress line %q", l)
		}
	}
}
