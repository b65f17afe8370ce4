// Package observetest helps test a service that serves a Monitor (pipeline/observe) over
// HTTP: scrape and read its /metrics, probe its endpoints, and poll for a state that offers
// no signal. It starts nothing and holds no state.
package observetest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape fetches url (a Prometheus text endpoint such as /metrics) and parses it with
// expfmt's text parser. It fails on a transport error, a status other than 200 or a body
// that does not parse.
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

// Value returns the value of the first sample of family name whose labels include the given
// pairs (name1, value1, name2, value2, ...), for counters, gauges and untyped samples; false
// when there is none.
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

// Eventually calls cond every interval until it returns nil or ctx is done; then it returns
// ctx's error wrapped with cond's last error. It is for state that offers no signal, such as
// an HTTP endpoint's answer.
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

// WaitReady polls base+"/readyz" every 50 ms until it answers 200, and fails t if that takes
// longer than d.
func WaitReady(t testing.TB, base string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
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
