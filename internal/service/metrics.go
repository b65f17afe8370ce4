package service

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// collector reads the pipeline at scrape time; the Kafka source's and producer's metrics are
// kprom's (registered beside it).
type collector struct {
	m *monitor
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dIn         = desc("sluice_stage_events_in_total", "Messages a stage took from its input.", "stage")
	dOut        = desc("sluice_stage_events_out_total", "Messages a stage emitted (or finished, for sinks).", "stage")
	dErrors     = desc("sluice_stage_errors_total", "Failed attempts of a stage (each retry counts).", "stage")
	dRetries    = desc("sluice_stage_retries_total", "Retries of a stage.", "stage")
	dBusy       = desc("sluice_stage_busy_seconds_total", "Time a stage's workers spent in user code.", "stage")
	dQueueLen   = desc("sluice_stage_queue_length", "Messages waiting on a stage's input edge.", "stage")
	dQueueCap   = desc("sluice_stage_queue_capacity", "Capacity of a stage's input edge.", "stage")
	dBottleneck = desc("sluice_bottleneck", "1 for the stage limiting throughput over the last sample interval (stage=\"source\" when no queue is backed up).", "stage")
	dInFlight   = desc("sluice_inflight_bytes", "Budget bytes of source events in flight.")
	dBudget     = desc("sluice_budget_bytes", "The pipeline's in-flight byte budget.")
	dMemBudget  = desc("sluice_memory_budget_bytes", "The whole data budget (--budget), split by kafka.Plan.")
	dHighWater  = desc("sluice_inflight_high_water_bytes", "Most budget bytes ever in flight at once.")
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dIn, dOut, dErrors, dRetries, dBusy, dQueueLen, dQueueCap, dBottleneck,
		dInFlight, dBudget, dMemBudget, dHighWater} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	snap := c.m.p.Stats()
	bn := c.m.View().Bottleneck
	for _, s := range snap.Stages {
		counter(dIn, float64(s.In), s.Name)
		counter(dOut, float64(s.Out), s.Name)
		counter(dErrors, float64(s.Errors), s.Name)
		counter(dRetries, float64(s.Retries), s.Name)
		counter(dBusy, s.Busy.Seconds(), s.Name)
		gauge(dQueueLen, float64(s.QueueLen), s.Name)
		gauge(dQueueCap, float64(s.QueueCap), s.Name)
		b := 0.0
		if s.Name == bn {
			b = 1
		}
		gauge(dBottleneck, b, s.Name)
	}
	src := 0.0
	if bn == "" {
		src = 1
	}
	gauge(dBottleneck, src, "source")
	gauge(dInFlight, float64(snap.InFlightBytes))
	gauge(dBudget, float64(snap.BudgetBytes))
	gauge(dMemBudget, float64(c.m.budget))
	gauge(dHighWater, float64(snap.HighWaterBytes))
}

// registry returns a registry with the sluice collector, the Kafka metrics (kprom) and the Go
// and process collectors.
func registry(m *monitor) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collector{m}, m.kafka, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}
