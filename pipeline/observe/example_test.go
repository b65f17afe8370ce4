package observe_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pipeline/observe"
	"github.com/sluicehq/sluice/stage"
)

// A user's main: build the pipeline, then watch it with a Monitor, its metrics on the user's
// registry and its handlers on the user's mux. A Kafka service adds
// observe.WithSource(kprom.New(src, prod)) and serves the mux with http.ListenAndServe(addr, mux).
func Example() {
	src := pipeline.Generate(1000, func(i int64, ev *stage.Event) { ev.Value = []byte("order") })
	b := pipeline.New(src)
	pipeline.To(b.Source(), stage.Sink("store", func(context.Context, *stage.Event) error { return nil }))
	p, err := b.Build()
	if err != nil {
		log.Fatal(err)
	}

	addr := "127.0.0.1:8080"
	mon := observe.New(p)
	reg := prometheus.NewRegistry()
	reg.MustRegister(mon.Collector(), collectors.NewGoCollector())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mon.Mount(mux, observe.DebugByDefault(addr)) // the debug pages only on a loopback address

	ctx, cancel := context.WithCancel(context.Background())
	monDone := make(chan error, 1)
	go func() { monDone <- mon.Run(ctx) }()
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
	cancel()
	<-monDone

	for _, path := range []string{"/healthz", "/readyz", "/debug/pipeline", "/metrics"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Println(path, rec.Code)
		if path == "/metrics" {
			sc := bufio.NewScanner(rec.Body)
			for sc.Scan() {
				if l := sc.Text(); strings.HasPrefix(l, "sluice_events_completed_total") || strings.HasPrefix(l, "sluice_stage_events_out_total") {
					fmt.Println(l)
				}
			}
		}
	}
	// Output:
	// /healthz 200
	// /readyz 200
	// /debug/pipeline 200
	// /metrics 200
	// sluice_events_completed_total 1000
	// sluice_stage_events_out_total{stage="store"} 1000
}
