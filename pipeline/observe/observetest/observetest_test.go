package observetest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestScrapeValueWaitReady: a registry served over HTTP is read back by Scrape and Value
// (label pairs select the sample, a missing one is reported), and WaitReady returns once
// /readyz turns 200.
func TestScrapeValueWaitReady(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"stage"})
	c.WithLabelValues("a").Add(3)
	c.WithLabelValues("b").Add(5)
	reg.MustRegister(c)
	var ready atomic.Int32
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready.Add(1) < 3 { // ready on the third probe
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	mfs, err := Scrape(context.Background(), srv.URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := Value(mfs, "x_total", "stage", "b"); !ok || v != 5 {
		t.Errorf("x_total{stage=b} = %v, %v; want 5", v, ok)
	}
	if v, ok := Value(mfs, "x_total", "stage", "c"); ok {
		t.Errorf("x_total{stage=c} = %v, want none", v)
	}
	if _, err := Scrape(context.Background(), srv.URL+"/nothing"); err == nil {
		t.Error("Scrape of a 404 succeeded")
	}
	WaitReady(t, srv.URL, 10*time.Second)
	if n := ready.Load(); n != 3 {
		t.Errorf("/readyz probed %d times, want 3 (ready on the third)", n)
	}
}
