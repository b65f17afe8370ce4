package observe

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLiveness: /healthz answers ok while events complete; with an event stuck in a sink
// (so events stay in flight) and nothing completing past the liveness timeout it answers 503;
// once the call returns and events complete again it recovers.
func TestLiveness(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	// Concurrency 1 everywhere: the stuck sink holds every later event in flight.
	p := gatedPipeline(t, 50, 5, release)
	m := New(p, WithLivenessTimeout(100*time.Millisecond), WithSampleInterval(10*time.Millisecond), WithLogger(quiet()))
	mux := http.NewServeMux()
	m.Mount(mux, false)
	if code, body := get(mux, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz before Run: %d %q, want 200", code, body)
	}
	runBoth(t, m, p)
	var body string
	waitFor(t, "/healthz 503", func() bool {
		var code int
		code, body = get(mux, "/healthz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "none completed") {
		t.Errorf("503 body %q does not say why", body)
	}
	release <- struct{}{}
	waitFor(t, "/healthz 200 again", func() bool { code, _ := get(mux, "/healthz"); return code == http.StatusOK })
	waitFor(t, "the pipeline to finish", func() bool { return p.Stats().Completed == 50 })
	// Nothing in flight: live however long ago the last completion was.
	m.cfg.liveness = time.Nanosecond
	if code, body := get(mux, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with nothing in flight: %d %q, want 200", code, body)
	}
}

// TestReadiness: /readyz follows the Source's Ready, and is ready without a Source.
func TestReadiness(t *testing.T) {
	release := make(chan struct{})
	close(release)
	src := newFakeSource(SourceSummary{})
	src.setNotReady("no partitions assigned")
	mux := http.NewServeMux()
	New(gatedPipeline(t, 1, -1, release), WithSource(src)).Mount(mux, false)
	if code, body := get(mux, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no partitions assigned") {
		t.Errorf("/readyz not ready: %d %q, want 503 naming the cause", code, body)
	}
	src.setNotReady("")
	if code, body := get(mux, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz ready: %d %q, want 200", code, body)
	}
	bare := http.NewServeMux()
	New(gatedPipeline(t, 1, -1, release)).Mount(bare, false)
	if code, body := get(bare, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz without a Source: %d %q, want 200", code, body)
	}
}

// TestDebugGating: the debug handlers exist only with debug true; health and readiness always.
func TestDebugGating(t *testing.T) {
	release := make(chan struct{})
	close(release)
	m := New(gatedPipeline(t, 1, -1, release), WithBudget(200<<10))
	off, on := http.NewServeMux(), http.NewServeMux()
	m.Mount(off, false)
	m.Mount(on, true)
	debug := []string{"/debug/pipeline", "/debug/pipeline.json", "/debug/pprof/", "/debug/pprof/cmdline"}
	for _, path := range debug {
		if code, _ := get(off, path); code != http.StatusNotFound {
			t.Errorf("debug off: %s = %d, want 404", path, code)
		}
		if code, _ := get(on, path); code != http.StatusOK {
			t.Errorf("debug on: %s = %d, want 200", path, code)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _ := get(off, path); code != http.StatusOK {
			t.Errorf("debug off: %s = %d, want 200", path, code)
		}
	}
	_, body := get(on, "/debug/pipeline.json")
	var v View
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if v.Name != "sluice" || len(v.Stages) != 2 || v.MemoryBudgetText != "200.0 KiB" || len(v.History.Series) != 4 {
		t.Errorf("pipeline.json: name %q, %d stages, memory budget %q, %d series; want sluice, 2, 200.0 KiB, 4",
			v.Name, len(v.Stages), v.MemoryBudgetText, len(v.History.Series))
	}
	_, page := get(on, "/debug/pipeline")
	for _, ref := range []string{"src=", "href=", "url(", "@import", "<link"} {
		if strings.Contains(page, ref) {
			t.Errorf("the page loads an asset (%q): it must be self-contained", ref)
		}
	}
}

func TestDebugByDefault(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.1.2.3:80": true, "[::1]:8080": true, "localhost:8080": true, "LOCALHOST": true,
		"::1": true, "127.0.0.1": true,
		":8080": false, "0.0.0.0:8080": false, "[::]:8080": false, "10.0.0.1:8080": false, "example.com:80": false, "": false,
	} {
		if got := DebugByDefault(addr); got != want {
			t.Errorf("DebugByDefault(%q) = %v, want %v", addr, got, want)
		}
	}
}
