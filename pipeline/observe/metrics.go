package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/clock"
)

// collector reads the pipeline (and the Source's collector) at scrape time.
type collector struct{ m *Monitor }

// Collector returns the pipeline's and its stages' metrics as a prometheus.Collector, plus the
// Source's (WithSource) metrics: register it on your own registry (nothing is registered
// globally). It reads the pipeline at scrape time; sluice_bottleneck comes from the latest
// sample (Run). Two monitors on one registry need distinct labels
// (prometheus.WrapRegistererWith a "pipeline" label), as their metric names are the same.
func (m *Monitor) Collector() prometheus.Collector { return collector{m} }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dIn         = desc("sluice_stage_events_in_total", "Messages a stage took from its input.", "stage")
	dOut        = desc("sluice_stage_events_out_total", "Messages a stage emitted (or finished, for sinks).", "stage")
	dFiltered   = desc("sluice_stage_events_filtered_total", "Messages a Filter dropped.", "stage")
	dErrors     = desc("sluice_stage_errors_total", "Failed attempts of a stage (each retry counts).", "stage")
	dRetries    = desc("sluice_stage_retries_total", "Retries of a stage.", "stage")
	dHandled    = desc("sluice_stage_handled_total", "Messages of a stage handed to the error handler.", "stage")
	dPanics     = desc("sluice_stage_panics_total", "Panics recovered in a stage's function.", "stage")
	dBusy       = desc("sluice_stage_busy_seconds_total", "Time a stage's workers spent in user code.", "stage")
	dQueueLen   = desc("sluice_stage_queue_length", "Messages waiting on a stage's input edge.", "stage")
	dQueueCap   = desc("sluice_stage_queue_capacity", "Capacity of a stage's input edge.", "stage")
	dBatched    = desc("sluice_stage_batched_events", "Source events waiting in a Batch stage's partial batch.", "stage")
	dBottleneck = desc("sluice_bottleneck", "1 for the stage limiting throughput over the last sample interval (stage=\"source\" when no queue is backed up).", "stage")
	dStalled    = desc("sluice_stage_stalled_calls", "Calls of a stage running longer than the stall threshold now.", "stage")
	dLongest    = desc("sluice_stage_longest_call_seconds", "How long the longest call of a stage running now has run (0: none running).", "stage")
	dInFlight   = desc("sluice_inflight_bytes", "Budget bytes of source events in flight.")
	dInFlightN  = desc("sluice_inflight_events", "Source events emitted and not yet completed.")
	dBudget     = desc("sluice_budget_bytes", "The pipeline's in-flight byte budget.")
	dHighWater  = desc("sluice_inflight_high_water_bytes", "Most budget bytes ever in flight at once.")
	dMemBudget  = desc("sluice_memory_budget_bytes", "The whole data budget (observe.WithBudget).")
	dEmitted    = desc("sluice_events_emitted_total", "Events the source emitted.")
	dCompleted  = desc("sluice_events_completed_total", "Events completed ok (committable).")
	dFailed     = desc("sluice_events_failed_total", "Events completed not ok (fatal error or hard stop).")
	dTooLarge   = desc("sluice_events_too_large_total", "Events larger than the budget, sent to the error handler.")
)

func (c collector) descs() []*prometheus.Desc {
	ds := []*prometheus.Desc{dIn, dOut, dFiltered, dErrors, dRetries, dHandled, dPanics, dBusy, dQueueLen, dQueueCap, dBatched,
		dBottleneck, dInFlight, dInFlightN, dBudget, dHighWater, dEmitted, dCompleted, dFailed, dTooLarge}
	if c.m.running != nil {
		ds = append(ds, dStalled, dLongest)
	}
	if c.m.cfg.budget > 0 {
		ds = append(ds, dMemBudget)
	}
	return ds
}

// Describe implements prometheus.Collector.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
	if s := c.m.cfg.src; s != nil {
		s.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	m := c.m
	snap := m.p.Stats()
	m.mu.Lock()
	bn := m.view.Bottleneck
	m.mu.Unlock()
	calls, now := m.calls(), clock.Nanotime()
	for _, s := range snap.Stages {
		counter(dIn, float64(s.In), s.Name)
		counter(dOut, float64(s.Out), s.Name)
		counter(dFiltered, float64(s.Filtered), s.Name)
		counter(dErrors, float64(s.Errors), s.Name)
		counter(dRetries, float64(s.Retries), s.Name)
		counter(dHandled, float64(s.Handled), s.Name)
		counter(dPanics, float64(s.Panics), s.Name)
		counter(dBusy, s.Busy.Seconds(), s.Name)
		gauge(dQueueLen, float64(s.QueueLen), s.Name)
		gauge(dQueueCap, float64(s.QueueCap), s.Name)
		gauge(dBatched, float64(s.Batched), s.Name)
		gauge(dBottleneck, b2f(s.Name == bn), s.Name)
		if m.running != nil {
			stalled, longest := 0, time.Duration(0)
			for _, cl := range calls {
				if cl.Stage == s.Name {
					d := time.Duration(now - cl.Start)
					longest = max(longest, d)
					if d > m.cfg.stall {
						stalled++
					}
				}
			}
			gauge(dStalled, float64(stalled), s.Name)
			gauge(dLongest, longest.Seconds(), s.Name)
		}
	}
	gauge(dBottleneck, b2f(bn == ""), "source")
	gauge(dInFlight, float64(snap.InFlightBytes))
	gauge(dInFlightN, float64(snap.InFlightEvents))
	gauge(dBudget, float64(snap.BudgetBytes))
	gauge(dHighWater, float64(snap.HighWaterBytes))
	counter(dEmitted, float64(snap.Emitted))
	counter(dCompleted, float64(snap.Completed))
	counter(dFailed, float64(snap.Failed))
	counter(dTooLarge, float64(snap.TooLarge))
	if m.cfg.budget > 0 {
		gauge(dMemBudget, float64(m.cfg.budget))
	}
	if s := m.cfg.src; s != nil {
		s.Collect(ch)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
