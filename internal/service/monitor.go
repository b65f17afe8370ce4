package service

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kprom"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pipeline/process"
)

// SampleInterval is how often the monitor samples the pipeline for rates, busy ratios and
// the bottleneck (the /debug/pipeline page and sluice_bottleneck).
const SampleInterval = time.Second

// ProgressInterval is how often the progress line is logged.
const ProgressInterval = 5 * time.Second

// monitor samples a running pipeline.
type monitor struct {
	p      *pipeline.Pipeline
	kafka  *kprom.Metrics // the source's and producer's metrics, readiness and summary
	budget int64          // whole budget (the pipeline's is its in-flight share)

	mu   sync.Mutex
	view View // latest sample
}

// View is the JSON of /debug/pipeline.json.
type View struct {
	Name           string      `json:"name"`
	Interval       float64     `json:"interval_seconds"`
	Source         SourceView  `json:"source"`
	Stages         []StageView `json:"stages"`
	Bottleneck     string      `json:"bottleneck"` // "" : the source is the limit
	InFlightBytes  int64       `json:"inflight_bytes"`
	BudgetBytes    int64       `json:"budget_bytes"` // the pipeline's in-flight budget
	HighWaterBytes int64       `json:"high_water_bytes"`
	RSSBytes       int64       `json:"rss_bytes"`
}

// SourceView is the source node of the page.
type SourceView struct {
	Assigned int64   `json:"assigned"`
	Paused   int64   `json:"paused"`
	Lag      int64   `json:"lag"`
	Rate     float64 `json:"rate"` // events emitted per second
}

// StageView is one stage node of the page.
type StageView struct {
	Name        string  `json:"name"`
	Kind        string  `json:"kind"`
	Concurrency int     `json:"concurrency"`
	InRate      float64 `json:"in_rate"`
	OutRate     float64 `json:"out_rate"`
	QueueLen    int     `json:"queue_len"`
	QueueCap    int     `json:"queue_cap"`
	Busy        float64 `json:"busy"` // 0..1
	Bottleneck  bool    `json:"bottleneck"`
}

func newMonitor(p *pipeline.Pipeline, src *kafka.Source, prod *kafka.Producer, budget int64) *monitor {
	m := &monitor{p: p, kafka: kprom.New(src, prod), budget: budget}
	s := p.Stats()
	m.view = m.sample(s, s, SampleInterval)
	return m
}

func (m *monitor) sample(prev, cur pipeline.Snapshot, elapsed time.Duration) View {
	st := m.kafka.Summary()
	bn, _ := pipeline.Bottleneck(prev, cur, elapsed)
	secs := elapsed.Seconds()
	v := View{Name: cur.Name, Interval: secs, Bottleneck: bn, InFlightBytes: cur.InFlightBytes, BudgetBytes: cur.BudgetBytes,
		HighWaterBytes: cur.HighWaterBytes, RSSBytes: process.RSS(),
		Source: SourceView{Assigned: st.Assigned, Paused: st.Paused, Lag: st.Lag, Rate: float64(cur.Emitted-prev.Emitted) / secs}}
	for i, s := range cur.Stages {
		p := s
		if i < len(prev.Stages) {
			p = prev.Stages[i]
		}
		v.Stages = append(v.Stages, StageView{Name: s.Name, Kind: string(s.Kind), Concurrency: s.Concurrency,
			InRate: float64(s.In-p.In) / secs, OutRate: float64(s.Out-p.Out) / secs, QueueLen: s.QueueLen, QueueCap: s.QueueCap,
			Busy: pipeline.BusyRatio(p, s, elapsed), Bottleneck: s.Name == bn})
	}
	return v
}

// View returns the latest sample.
func (m *monitor) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.view
}

// run samples every SampleInterval and logs progress every ProgressInterval until ctx is done.
func (m *monitor) run(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(SampleInterval)
	defer t.Stop()
	prev, prevAt := m.p.Stats(), time.Now()
	logPrev, logAt := prev, prevAt
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur := m.p.Stats()
			v := m.sample(prev, cur, now.Sub(prevAt))
			m.mu.Lock()
			m.view = v
			m.mu.Unlock()
			prev, prevAt = cur, now
			if el := now.Sub(logAt); el >= ProgressInterval {
				m.progress(log, logPrev, cur, el, v)
				logPrev, logAt = cur, now
			}
		}
	}
}

func (m *monitor) progress(log *slog.Logger, prev, cur pipeline.Snapshot, el time.Duration, v View) {
	bn, busy := pipeline.Bottleneck(prev, cur, el)
	if bn == "" {
		bn = "(source)"
	}
	secs := el.Seconds()
	log.Info("progress",
		"in_per_s", int64(float64(cur.Emitted-prev.Emitted)/secs),
		"out_per_s", int64(float64(cur.Completed-prev.Completed)/secs),
		"lag", v.Source.Lag,
		"inflight", mib(cur.InFlightBytes)+"/"+mib(cur.BudgetBytes),
		"rss", mib(v.RSSBytes),
		"bottleneck", bn, "busy", strconv.FormatFloat(busy, 'f', 2, 64))
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + "MiB" }
