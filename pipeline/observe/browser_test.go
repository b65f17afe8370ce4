package observe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// chromiumInstall is the install command the skip and failure messages name.
const chromiumInstall = "apt-get install chromium"

// chromium finds the browser: $SLUICE_CHROMIUM if set, else chromium or chromium-browser on
// PATH (as examples/orders' browser test does).
func chromium() (string, error) {
	if p := os.Getenv("SLUICE_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("SLUICE_CHROMIUM: %w", err)
		}
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("neither chromium nor chromium-browser is on PATH")
}

// TestPageInBrowser loads /debug/pipeline of a Monitor over an in-memory pipeline in headless
// Chromium: a box per stage and one bottleneck mark, the four charts (throughput, lag, in
// flight, RSS) drawn as SVG polylines with a point per sample, the paused partitions listed,
// and sizes under 1 MiB in KiB (never "0.0 MiB"). Without Chromium it skips naming the install
// command, unless CI is set: then it fails.
func TestPageInBrowser(t *testing.T) {
	bin, err := chromium()
	if err != nil {
		msg := fmt.Sprintf("chromium not found (%s, or set SLUICE_CHROMIUM to the browser's path): %v", chromiumInstall, err)
		if os.Getenv("CI") != "" {
			t.Fatalf("%s; CI is set, so this test must run, not skip", msg)
		}
		t.Skip(msg)
	}
	val := make([]byte, 100)
	src := pipeline.Generate(-1, func(i int64, ev *stage.Event) { ev.Topic, ev.Partition, ev.Value = "orders", int32(i%4), val })
	b := pipeline.New(src, pipeline.WithLogger(quiet()), pipeline.WithBudget(256<<10), pipeline.WithMaxEventBytes(1<<10))
	s := pipeline.Then(b.Source(), stage.Map("parse", func(_ context.Context, ev *stage.Event) (int, error) { return len(ev.Value), nil }))
	pipeline.To(s, stage.Sink("store", func(context.Context, int) error { time.Sleep(200 * time.Microsecond); return nil }))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	fake := newFakeSource(SourceSummary{Assigned: 4, Paused: 1, Lag: 42, PausedPartitions: []string{"orders[3]"}})
	m := New(p, WithSource(fake), WithSampleInterval(100*time.Millisecond), WithBudget(900<<10), WithLogger(quiet()))
	mux := http.NewServeMux()
	m.Mount(mux, true)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	runBoth(t, m, p)
	waitFor(t, "5 samples with traffic", func() bool {
		v := m.View()
		vals := v.History.Series[0].Values
		return len(vals) >= 5 && vals[len(vals)-1] > 0
	})

	opts := []chromedp.ExecAllocatorOption{chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.WindowSize(1400, 600),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true)}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	ctx, stop := context.WithTimeout(bctx, 60*time.Second)
	defer stop()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/debug/pipeline"),
		chromedp.WaitVisible(`body[data-ready="1"] [data-chart="rss"] polyline`)); err != nil {
		t.Fatal(err)
	}
	eval := func(js string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	charts := eval(`Array.from(document.querySelectorAll('[data-chart]')).map(function(e){
		var svg=e.querySelector('svg');
		return e.dataset.chart+':'+e.querySelector('polyline').getAttribute('points').trim().split(' ').length+':'+(svg.getBoundingClientRect().width>0)}).join(' ')`)
	got := map[string]bool{}
	for _, c := range strings.Fields(charts) {
		f := strings.Split(c, ":")
		n, _ := strconv.Atoi(f[1])
		if n < 5 || f[2] != "true" {
			t.Errorf("chart %s: %s points, rendered %s; want at least 5 points, rendered", f[0], f[1], f[2])
		}
		got[f[0]] = true
	}
	for _, name := range []string{"throughput", "lag", "inflight", "rss"} {
		if !got[name] {
			t.Errorf("no chart %q (charts: %s)", name, charts)
		}
	}
	summary := eval(`document.getElementById('summary').textContent`)
	if !strings.Contains(summary, "/ 256.0 KiB") || !strings.Contains(summary, "memory budget 900.0 KiB") || regexp.MustCompile(`(^|[^0-9.])0\.0 MiB`).MatchString(summary) {
		t.Errorf("summary %q: want the budgets in KiB", summary)
	}
	if paused := eval(`document.getElementById('paused').textContent`); !strings.Contains(paused, "orders[3]") {
		t.Errorf("paused partitions %q: want orders[3]", paused)
	}
	if stages := eval(`Array.from(document.querySelectorAll('[data-stage]')).map(function(e){return e.dataset.stage}).join(',')`); stages != "parse,store" {
		t.Errorf("stage boxes %q, want parse,store", stages)
	}
	if marks := eval(`String(document.querySelectorAll('.bottleneck').length)`); marks != "1" {
		t.Errorf("%s .bottleneck marks, want exactly 1", marks)
	}
}
