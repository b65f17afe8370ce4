// Package servicetest holds helpers for the tests of sluice's example services: scraping and
// parsing /metrics, probing endpoints, reading committed offsets.
package servicetest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluicehq/sluice/internal/service"
)

// Scrape fetches and parses url (a /metrics endpoint) with expfmt's text parser.
func Scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(bufio.NewReader(resp.Body))
}

// StageValues returns family's value per "stage" label (counters and gauges).
func StageValues(mf *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		var stage string
		for _, l := range m.GetLabel() {
			if l.GetName() == "stage" {
				stage = l.GetValue()
			}
		}
		switch {
		case m.Counter != nil:
			out[stage] = m.GetCounter().GetValue()
		case m.Gauge != nil:
			out[stage] = m.GetGauge().GetValue()
		}
	}
	return out
}

// Status returns the HTTP status of GET url.
func Status(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Eventually calls cond every interval until it returns nil or ctx is done (then it returns
// cond's last error). It is for polling state that offers no signal (an HTTP endpoint).
func Eventually(ctx context.Context, interval time.Duration, cond func() error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

var listenRE = regexp.MustCompile(`msg="http listening" .*addr=(\S+)`)

// ListenAddr extracts the bound HTTP address from a service log line, or "".
func ListenAddr(line string) string {
	if m := listenRE.FindStringSubmatch(line); m != nil {
		return m[1]
	}
	return ""
}

// Start runs a service's run function in process with args (plus --http 127.0.0.1:0) and
// returns its HTTP base URL, a cancel (the in-process SIGTERM) and its exit code channel.
// afterDrain, if set, is called with the broker address once the pipeline drained.
func Start(t testing.TB, run func(context.Context, []string) int, afterDrain func(brokers string), args ...string) (string, context.CancelFunc, <-chan int) {
	t.Helper()
	addrs := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	ctx = service.WithHooks(ctx, service.Hooks{Listening: func(a string) { addrs <- a }, AfterDrain: afterDrain})
	code := make(chan int, 1)
	done := make(chan struct{})
	go func() { defer close(done); code <- run(ctx, append([]string{"--http", "127.0.0.1:0"}, args...)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Error("run did not return after cancel")
		}
	})
	select {
	case a := <-addrs:
		return "http://" + a, cancel, code
	case c := <-code:
		t.Fatalf("run exited early with %d", c)
	case <-time.After(30 * time.Second):
		t.Fatal("no HTTP address reported")
	}
	return "", nil, nil
}

// WaitReady polls base/readyz until it answers 200 (30 s at most).
func WaitReady(t testing.TB, base string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Eventually(ctx, 50*time.Millisecond, func() error {
		code, err := Status(ctx, base+"/readyz")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/readyz %d", code)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// WaitExit waits for a clean exit (code 0) after cancel.
func WaitExit(t testing.TB, cancel context.CancelFunc, code <-chan int) {
	t.Helper()
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit code %d, want 0", c)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not drain within 60s")
	}
}

// Value returns the value of the first sample of family name with the given label pairs.
func Value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}
