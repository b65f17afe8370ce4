package observe

import (
	"strconv"
	"time"

	"github.com/sluicehq/sluice/internal/clock"
	"github.com/sluicehq/sluice/pipeline"
)

// View is one sample of the pipeline, the JSON of /debug/pipeline.json. Byte sizes come
// twice: as numbers and as text (the *_text fields, formatted as the progress line does: KiB
// under 1 MiB).
type View struct {
	Name              string      `json:"name"`
	Interval          float64     `json:"interval_seconds"` // the time this sample's rates cover
	Source            SourceView  `json:"source"`
	Stages            []StageView `json:"stages"`
	Bottleneck        string      `json:"bottleneck"` // "": the source is the limit
	Throughput        float64     `json:"throughput"` // events completed per second
	InFlightEvents    int64       `json:"inflight_events"`
	InFlightBytes     int64       `json:"inflight_bytes"`
	BudgetBytes       int64       `json:"budget_bytes"` // the pipeline's in-flight budget
	HighWaterBytes    int64       `json:"high_water_bytes"`
	MemoryBudgetBytes int64       `json:"memory_budget_bytes"` // WithBudget; 0: not given
	RSSBytes          int64       `json:"rss_bytes"`
	InFlightText      string      `json:"inflight_text"`
	BudgetText        string      `json:"budget_text"`
	HighWaterText     string      `json:"high_water_text"`
	MemoryBudgetText  string      `json:"memory_budget_text"`
	RSSText           string      `json:"rss_text"`
	Stalled           []Stall     `json:"stalled"` // calls running longer than the stall threshold
	History           History     `json:"history"`
}

// SourceView is the source node of the page.
type SourceView struct {
	Present          bool     `json:"present"` // a Source was given (WithSource)
	Assigned         int64    `json:"assigned"`
	Paused           int64    `json:"paused"`
	PausedPartitions []string `json:"paused_partitions"`
	Lag              int64    `json:"lag"`
	Rate             float64  `json:"rate"` // events emitted per second
}

// StageView is one stage node of the page.
type StageView struct {
	Name         string  `json:"name"`
	Kind         string  `json:"kind"`
	Concurrency  int     `json:"concurrency"`
	InRate       float64 `json:"in_rate"`
	OutRate      float64 `json:"out_rate"`
	QueueLen     int     `json:"queue_len"`
	QueueCap     int     `json:"queue_cap"`
	Busy         float64 `json:"busy"` // 0..1
	Bottleneck   bool    `json:"bottleneck"`
	StalledCalls int     `json:"stalled_calls"`
	LongestCall  float64 `json:"longest_call_seconds"` // the longest call running now
}

// Stall is a stage call running longer than the stall threshold.
type Stall struct {
	Stage     string  `json:"stage"`
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Offset    int64   `json:"offset"`
	Seconds   float64 `json:"seconds"`
}

// History is the charts' data: one point per sample interval, oldest first.
type History struct {
	Interval float64  `json:"interval_seconds"`
	Series   []Series `json:"series"`
}

// Series is one chart.
type Series struct {
	Name     string    `json:"name"` // throughput, lag, inflight, rss
	Title    string    `json:"title"`
	Values   []float64 `json:"values"`
	LastText string    `json:"last_text"`
	MaxText  string    `json:"max_text"`
}

// sample builds the view of the interval elapsed from prev to cur (rates 0 when elapsed is 0).
// The caller holds mu (stage stalls come from the tracked calls).
func (m *Monitor) sample(prev, cur pipeline.Snapshot, elapsed time.Duration) View {
	secs := elapsed.Seconds()
	rate := func(a, b uint64) float64 {
		if secs <= 0 {
			return 0
		}
		return float64(b-a) / secs
	}
	bn, _ := pipeline.Bottleneck(prev, cur, elapsed)
	r := rss()
	v := View{Name: cur.Name, Interval: secs, Bottleneck: bn, Throughput: rate(prev.Completed, cur.Completed),
		InFlightEvents: cur.InFlightEvents, InFlightBytes: cur.InFlightBytes, BudgetBytes: cur.BudgetBytes,
		HighWaterBytes: cur.HighWaterBytes, MemoryBudgetBytes: m.cfg.budget, RSSBytes: r,
		InFlightText: formatBytes(cur.InFlightBytes), BudgetText: formatBytes(cur.BudgetBytes),
		HighWaterText: formatBytes(cur.HighWaterBytes), MemoryBudgetText: formatBytes(m.cfg.budget), RSSText: formatBytes(r),
		Source: SourceView{Rate: rate(prev.Emitted, cur.Emitted)}}
	if s := m.cfg.src; s != nil {
		sum := s.Summary()
		v.Source.Present, v.Source.Assigned, v.Source.Paused, v.Source.Lag = true, sum.Assigned, sum.Paused, sum.Lag
		v.Source.PausedPartitions = append([]string(nil), sum.PausedPartitions...)
	}
	calls := m.calls()
	now := clock.Nanotime()
	for i, s := range cur.Stages {
		p := s
		if i < len(prev.Stages) {
			p = prev.Stages[i]
		}
		sv := StageView{Name: s.Name, Kind: string(s.Kind), Concurrency: s.Concurrency,
			InRate: rate(p.In, s.In), OutRate: rate(p.Out, s.Out), QueueLen: s.QueueLen, QueueCap: s.QueueCap,
			Busy: pipeline.BusyRatio(p, s, elapsed), Bottleneck: s.Name == bn}
		for _, c := range calls {
			if c.Stage != s.Name {
				continue
			}
			d := time.Duration(now - c.Start)
			sv.LongestCall = max(sv.LongestCall, d.Seconds())
			if d > m.cfg.stall {
				sv.StalledCalls++
				v.Stalled = append(v.Stalled, Stall{Stage: c.Stage, Topic: c.Origin.Topic, Partition: c.Origin.Partition,
					Offset: c.Origin.Offset, Seconds: d.Seconds()})
			}
		}
		v.Stages = append(v.Stages, sv)
	}
	return v
}

// history returns the ring as chart series, oldest first. The caller holds mu.
func (m *Monitor) history() History {
	pts := m.hist[:m.next]
	if m.full {
		pts = append(append([]point(nil), m.hist[m.next:]...), m.hist[:m.next]...)
	}
	h := History{Interval: m.cfg.interval.Seconds()}
	add := func(name, title string, get func(point) float64, text func(float64) string) {
		s := Series{Name: name, Title: title, Values: make([]float64, len(pts))}
		hi := 0.0
		for i, p := range pts {
			s.Values[i] = get(p)
			hi = max(hi, s.Values[i])
		}
		last := 0.0
		if len(pts) > 0 {
			last = s.Values[len(pts)-1]
		}
		s.LastText, s.MaxText = text(last), text(hi)
		h.Series = append(h.Series, s)
	}
	perSec := func(x float64) string { return strconv.FormatFloat(x, 'f', 0, 64) + "/s" }
	count := func(x float64) string { return strconv.FormatFloat(x, 'f', 0, 64) }
	bytes := func(x float64) string { return formatBytes(int64(x)) }
	add("throughput", "throughput (events completed/s)", func(p point) float64 { return p.throughput }, perSec)
	add("lag", "lag (records)", func(p point) float64 { return p.lag }, count)
	add("inflight", "in flight", func(p point) float64 { return p.inflight }, bytes)
	add("rss", "RSS", func(p point) float64 { return p.rss }, bytes)
	return h
}

// formatBytes formats a size for people: KiB under 1 MiB, MiB under 1 GiB, else GiB, with
// one decimal. The page, its JSON and the progress line all use it.
func formatBytes(n int64) string {
	f, unit := float64(n)/(1<<10), " KiB"
	switch {
	case n >= 1<<30:
		f, unit = float64(n)/(1<<30), " GiB"
	case n >= 1<<20:
		f, unit = float64(n)/(1<<20), " MiB"
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + unit
}
