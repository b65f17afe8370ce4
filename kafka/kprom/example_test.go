package kprom_test

import (
	"log"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kprom"
)

// The source's and producer's metrics on the service's own registry, served at /metrics,
// and its readiness at /readyz. Not run: it needs a broker.
func ExampleNew() {
	src, err := kafka.NewSource(kafka.Config{Brokers: "localhost:9092", GroupID: "orders", Topics: []string{"orders"}})
	if err != nil {
		log.Fatal(err)
	}
	prod, err := src.NewProducer(kafka.ProducerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	m := kprom.New(src, prod)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	http.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := m.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	// ... build the pipeline on src, run it, and serve http.
}
