package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluicehq/sluice/pipeline/observe/observetest"
)

// chromiumInstall is the install command the skip and failure messages name.
const chromiumInstall = "apt-get install chromium"

// chromium finds the browser: $SLUICE_CHROMIUM if set, else chromium or chromium-browser on
// PATH. Only PATH is searched (no fixed paths), so a PATH without the browser hides it.
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

// sizesRE is the page's summary: in flight and high water in KiB or MiB, the budgets in MiB.
var sizesRE = regexp.MustCompile(`^in flight [0-9.]+ (KiB|MiB) / 32\.0 MiB \(high water [0-9.]+ (KiB|MiB)\), RSS [0-9.]+ MiB, memory budget 64\.0 MiB, bottleneck: `)

// TestPipelinePageInBrowser loads /debug/pipeline, which the service serves on its loopback
// address (debug on by default there), in headless Chromium: every stage has its box, exactly
// one box is marked as the bottleneck, the four charts (throughput, lag, in flight, RSS) are
// drawn with a point per sample, sizes are in KiB under 1 MiB (the ~100 KiB in flight of
// these small records never shows as "0.0 MiB") and in MiB above, and a screenshot is taken (saved next to
// this file as pipeline.png, the README's picture, only with SLUICE_UPDATE_SCREENSHOT=1, so a
// test run leaves the checkout clean). Without Chromium it skips, naming the install command,
// so the README's test command passes on a machine with only Go, gcc and git; with the
// environment variable CI set it fails instead, so CI (which installs Chromium in .ci/run and
// runs with CI=true) never silently skips it.
func TestPipelinePageInBrowser(t *testing.T) {
	bin, err := chromium()
	if err != nil {
		msg := fmt.Sprintf("chromium not found (%s, or set SLUICE_CHROMIUM to the browser's path): %v", chromiumInstall, err)
		if os.Getenv("CI") != "" {
			t.Fatalf("%s; CI is set, so this test must run, not skip", msg)
		}
		t.Skip(msg)
	}
	base, cancel, code := start(t, nil, "--budget", "64MiB")
	observetest.WaitReady(t, base, 30*time.Second)

	opts := []chromedp.ExecAllocatorOption{chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.WindowSize(1400, 420),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true)}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	ctx, stop := context.WithTimeout(bctx, 60*time.Second)
	defer stop()

	// Wait for samples with traffic, so the page shows live numbers and charts with points.
	if err := observetest.Eventually(ctx, 200*time.Millisecond, func() error {
		resp, err := http.Get(base + "/debug/pipeline.json")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var v struct {
			Source  struct{ Rate float64 }
			History struct{ Series []struct{ Values []float64 } }
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return err
		}
		if v.Source.Rate <= 0 {
			return fmt.Errorf("no traffic sampled yet")
		}
		if len(v.History.Series) == 0 || len(v.History.Series[0].Values) < 3 {
			return fmt.Errorf("fewer than 3 samples in the charts")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	err = chromedp.Do(ctx, chromedp.Navigate(base+"/debug/pipeline"),
		chromedp.WaitVisible(`body[data-ready="1"] [data-stage="produce"]`), chromedp.WaitVisible(`[data-chart="rss"] polyline`))
	if err != nil {
		t.Fatal(err)
	}
	boxes, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('[data-stage]')).map(e => e.dataset.stage)`))
	if err != nil {
		t.Fatal(err)
	}
	marks, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('.bottleneck').length`))
	if err != nil {
		t.Fatal(err)
	}
	charts, err := chromedp.Run(ctx, chromedp.Evaluate[string](`Array.from(document.querySelectorAll('[data-chart]')).map(function(e){
		return e.dataset.chart+':'+e.querySelector('polyline').getAttribute('points').trim().split(' ').length+':'+(e.querySelector('svg').getBoundingClientRect().width>0)}).join(' ')`))
	if err != nil {
		t.Fatal(err)
	}
	summary, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('summary').textContent`))
	if err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, b := range boxes {
		have[b] = true
	}
	for _, s := range stages {
		if !have[s] {
			t.Errorf("no box for stage %q (boxes %v)", s, boxes)
		}
	}
	if marks != 1 {
		t.Errorf("%d .bottleneck marks, want exactly 1", marks)
	}
	drawn := map[string]bool{}
	for _, c := range strings.Fields(charts) {
		f := strings.Split(c, ":")
		if n, _ := strconv.Atoi(f[1]); n < 3 || f[2] != "true" {
			t.Errorf("chart %s: %s points, rendered %s; want at least 3 points, rendered", f[0], f[1], f[2])
		}
		drawn[f[0]] = true
	}
	for _, name := range []string{"throughput", "lag", "inflight", "rss"} {
		if !drawn[name] {
			t.Errorf("no chart %q (charts: %s)", name, charts)
		}
	}
	// --budget 64MiB: the pipeline's in-flight share is half (kafka.Plan).
	if !sizesRE.MatchString(summary) || strings.Contains(summary, " 0.0 MiB") {
		t.Errorf("summary %q: want sizes in KiB under 1 MiB, MiB above, matching %s", summary, sizesRE)
	}
	if len(png) == 0 {
		t.Error("empty screenshot")
	}
	dir := t.TempDir()
	if os.Getenv("SLUICE_UPDATE_SCREENSHOT") == "1" {
		dir = "."
	}
	if err := os.WriteFile(filepath.Join(dir, "pipeline.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	waitExit(t, cancel, code)
}
