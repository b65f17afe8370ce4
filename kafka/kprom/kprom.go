// Package kprom exports a kafka.Source and its kafka.Producer to Prometheus and tells a
// pipeline monitor (pipeline/observe) whether the source is ready and what it is doing.
//
// Metrics follows Prometheus conventions: units in names, counters end in _total, and a
// partition is labelled by topic and partition separately. It reads the source's and the
// producer's statistics at scrape time (nothing is sampled in the background), so register it
// on the registry you serve; it holds no global state. Lag comes from librdkafka's
// statistics, every kafka.Config.StatsInterval (default 5 s): the high watermark is the one
// last fetched, and a paused partition fetches nothing, so while it is paused its lag shows
// the records fetched before the pause, not the whole backlog (the group's lag as the broker
// computes it, e.g. by a KEDA or Burrow exporter, is exact).
package kprom

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/pipeline/observe"
)

// ErrNotAssigned is Ready's error while the consumer has no partition assigned: before it
// joined its group, after it lost its assignment, or when the group has more members than the
// topics have partitions.
var ErrNotAssigned = errors.New("kprom: no partitions assigned")

// Metrics is a prometheus.Collector for a kafka.Source and, if not nil, the producer of its
// sink and dead-letter topic; it also reports readiness and a summary (the observe.Source
// interface). Build it with New; it is safe for concurrent use.
type Metrics struct {
	src  *kafka.Source
	prod *kafka.Producer
}

// New returns the metrics of src and prod (prod may be nil: no producer metrics). src must
// not be nil.
func New(src *kafka.Source, prod *kafka.Producer) *Metrics {
	return &Metrics{src: src, prod: prod}
}

var _ observe.Source = (*Metrics)(nil)

// Ready returns nil when the source has partitions assigned, else ErrNotAssigned.
func (m *Metrics) Ready() error {
	if m.src.Stats().Assigned > 0 {
		return nil
	}
	return ErrNotAssigned
}

// Summary returns the assigned partitions, the paused ones, and the lag summed over the
// assigned partitions whose lag librdkafka's statistics know.
func (m *Metrics) Summary() observe.SourceSummary {
	st := m.src.Stats()
	s := observe.SourceSummary{Assigned: st.Assigned, Paused: st.Paused}
	for _, p := range st.Partitions {
		if p.Lag > 0 {
			s.Lag += p.Lag
		}
		if p.Paused {
			s.PausedPartitions = append(s.PausedPartitions, p.Topic+"["+strconv.Itoa(int(p.Partition))+"]")
		}
	}
	return s
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dLag          = desc("sluice_consumer_lag_records", "Records between a partition's high watermark, as last fetched, and its committed offset (librdkafka statistics; absent until known; not refreshed while the partition is paused).", "topic", "partition")
	dPartPaused   = desc("sluice_partition_paused", "1 while the source keeps the partition paused (backpressure), else 0.", "topic", "partition")
	dAssigned     = desc("sluice_assigned_partitions", "Partitions assigned to this consumer.")
	dPaused       = desc("sluice_paused_partitions", "Assigned partitions paused for backpressure.")
	dPauses       = desc("sluice_pauses_total", "Partition pauses for backpressure or ordering.")
	dCommits      = desc("sluice_commits_total", "Successful offset commit requests.")
	dCommitErrors = desc("sluice_commit_errors_total", "Failed offset commit requests (retried at the next commit).")
	dRebalances   = desc("sluice_rebalances_total", "Rebalance callbacks, by kind: partitions assigned or revoked (lost included).", "kind")
	dRevokeTime   = desc("sluice_revoke_duration_seconds", "Time revokes took (waiting for in-flight events, committing): count and sum over every revoke.")
	dConns        = desc("sluice_librdkafka_connections", "Broker connections up (consumer, librdkafka statistics).")
	dRx           = desc("sluice_librdkafka_rx_bytes_total", "Bytes received from brokers (consumer, librdkafka statistics).")
	dTx           = desc("sluice_librdkafka_tx_bytes_total", "Bytes sent to brokers (consumer, librdkafka statistics).")

	dDeadLetters    = desc("sluice_dead_letters_total", "Records produced to a dead-letter topic.")
	dDeliveryErrors = desc("sluice_producer_delivery_errors_total", "Records the producer failed to deliver.")
)

var consumerDescs = []*prometheus.Desc{dLag, dPartPaused, dAssigned, dPaused, dPauses, dCommits, dCommitErrors, dRebalances, dRevokeTime, dConns, dRx, dTx}

// Describe sends the descriptions of every metric Collect sends (the producer's only with a
// producer).
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range consumerDescs {
		ch <- d
	}
	if m.prod != nil {
		ch <- dDeadLetters
		ch <- dDeliveryErrors
	}
}

// Collect reads the source's (and producer's) statistics once and sends the metrics.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	st := m.src.Stats()
	for _, p := range st.Partitions {
		part := strconv.Itoa(int(p.Partition))
		paused := 0.0
		if p.Paused {
			paused = 1
		}
		gauge(dPartPaused, paused, p.Topic, part)
		if p.Lag >= 0 {
			gauge(dLag, float64(p.Lag), p.Topic, part)
		}
	}
	gauge(dAssigned, float64(st.Assigned))
	gauge(dPaused, float64(st.Paused))
	counter(dPauses, float64(st.Pauses))
	counter(dCommits, float64(st.Commits))
	counter(dCommitErrors, float64(st.CommitErrors))
	ch <- prometheus.MustNewConstSummary(dRevokeTime, st.Revokes, st.RevokeTime.Seconds(), nil)
	counter(dRebalances, float64(st.Assigns), "assigned")
	counter(dRebalances, float64(st.Revokes), "revoked")
	gauge(dConns, float64(st.Connections))
	counter(dRx, float64(st.RxBytes))
	counter(dTx, float64(st.TxBytes))
	if m.prod != nil {
		ps := m.prod.Stats()
		counter(dDeadLetters, float64(ps.DeadLetters))
		counter(dDeliveryErrors, float64(ps.DeliveryErrors))
	}
}
