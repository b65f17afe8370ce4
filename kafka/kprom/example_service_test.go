package kprom_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kprom"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pipeline/observe"
	"github.com/sluicehq/sluice/pipeline/process"
	"github.com/sluicehq/sluice/stage"
)

// A user's whole service: sized to its container (GOMAXPROCS, GOMEMLIMIT and the data budget
// from the cgroup), drained on SIGTERM, with Prometheus metrics, health, readiness and (on a
// loopback address) the pipeline page and pprof. It upper-cases orders into orders-upper.
// Not run: it needs a broker. TestExternalModule builds this body as the main of a module of
// its own, which can import only the public API.
func Example_service() {
	log, addr := slog.Default(), "127.0.0.1:8080"
	fit, undo := process.FitProcess(log)
	defer undo()
	ctx, stop := process.SignalContext(context.Background(), log)
	defer stop()
	src, err := kafka.NewSource(kafka.Config{Brokers: "localhost:9092", GroupID: "upper", Topics: []string{"orders"}, Budget: fit.Budget})
	if err != nil {
		log.Error("source", "err", err)
		os.Exit(1)
	}
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "orders-upper"})
	if err != nil {
		log.Error("producer", "err", err)
		os.Exit(1)
	}
	defer prod.Close(context.Background()) // after Run: the sink only flushes it

	b := pipeline.New(src, pipeline.WithLogger(log))
	upper := pipeline.Then(b.Source(), stage.Map("upper", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		return kafka.Record{Key: ev.Key, Value: []byte(strings.ToUpper(string(ev.Value)))}, nil
	}))
	pipeline.To(upper, prod.Sink("produce"))
	p, err := b.Build()
	if err != nil {
		log.Error("pipeline", "err", err)
		os.Exit(1)
	}

	mon := observe.New(p, observe.WithSource(kprom.New(src, prod)), observe.WithBudget(fit.Budget), observe.WithProgress(os.Stderr, 5*time.Second))
	reg := prometheus.NewRegistry()
	reg.MustRegister(mon.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mon.Mount(mux, observe.DebugByDefault(addr))
	go func() { log.Error("http", "err", http.ListenAndServe(addr, mux)) }()
	go mon.Run(ctx)
	if err := p.Run(ctx); err != nil {
		log.Error("run", "err", err)
		os.Exit(1)
	}
}
