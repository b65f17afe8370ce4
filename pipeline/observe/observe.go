// Package observe watches a running pipeline: a Monitor samples it (throughput, lag, in-flight
// bytes, RSS, the bottleneck), keeps a few minutes of history for the /debug/pipeline page's
// charts, writes a progress line, reports stage calls that stall, exports Prometheus metrics on
// the user's registry and mounts health, readiness and debug handlers on the user's mux.
//
// It imports no Kafka package: a source adds its readiness, lag and metrics through Source
// (kafka/kprom implements it for the Kafka source).
//
//	mon := observe.New(p, observe.WithSource(kprom.New(src, prod)), observe.WithProgress(os.Stderr, 5*time.Second))
//	reg.MustRegister(mon.Collector())
//	mon.Mount(mux, observe.DebugByDefault(addr)) // debug pages only on a loopback address
//	go mon.Run(ctx)
package observe

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/ext"
	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/pipeline"
)

// Defaults of the options.
const (
	DefaultSampleInterval  = time.Second
	DefaultHistory         = 5 * time.Minute
	DefaultStallThreshold  = 30 * time.Second
	DefaultLivenessTimeout = 2 * time.Minute
)

// Source is what a source adds to a Monitor (kafka/kprom implements it for kafka.Source): its
// metrics (the Monitor's Collector collects them too), its readiness (/readyz) and a summary
// for the page and the progress line. Its methods are called from the Monitor's goroutines and
// HTTP handlers, concurrently with the pipeline's Run: they must be safe for that and must not
// block.
type Source interface {
	prometheus.Collector
	Ready() error           // nil when the source can work (e.g. partitions assigned)
	Summary() SourceSummary // for the page and the progress line
}

// SourceSummary is a source's state as the page and the progress line show it.
type SourceSummary struct {
	Assigned, Paused, Lag int64
	PausedPartitions      []string // "topic[partition]", for the page
}

// Option configures a Monitor.
type Option func(*config)

type config struct {
	src      Source
	log      *slog.Logger
	progress io.Writer
	every    time.Duration
	interval time.Duration
	history  time.Duration
	stall    time.Duration
	liveness time.Duration
	budget   int64
}

// WithSource adds the source's readiness, metrics and page node. Default none: /readyz is
// ready, lag is 0.
func WithSource(s Source) Option { return func(c *config) { c.src = s } }

// WithLogger sets the logger of stall reports. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithProgress writes a progress line to w every interval while Run runs (intervals are
// rounded up to whole sample intervals). When w is a terminal (an *os.File on a character
// device) the line is rewritten in place; otherwise (a log file, a pipe, a buffer) each
// interval writes one plain line ending in '\n', without carriage returns or escape codes.
// Default: no progress line.
func WithProgress(w io.Writer, every time.Duration) Option {
	return func(c *config) { c.progress, c.every = w, every }
}

// WithSampleInterval sets how often Run samples the pipeline (rates, busy ratios, the
// bottleneck, the charts' points, stall checks). Default 1 s.
func WithSampleInterval(d time.Duration) Option { return func(c *config) { c.interval = d } }

// WithHistory sets the window of the page's charts. Default 5 min.
func WithHistory(d time.Duration) Option { return func(c *config) { c.history = d } }

// WithStallThreshold sets how long a stage call (one attempt of the user function) may run
// before it is reported: once per call, by a Warn log line naming the stage, the record's
// topic/partition/offset and the call's goroutine stack, and in the metrics
// sluice_stage_stalled_calls and sluice_stage_longest_call_seconds. Default 30 s; 0 or less
// turns tracking off (those metrics are then not exported). Tracking costs every stage call
// a clock read and an uncontended lock.
func WithStallThreshold(d time.Duration) Option { return func(c *config) { c.stall = d } }

// WithLivenessTimeout sets when /healthz fails: events are in flight and none completed for
// d. Default 2 min.
func WithLivenessTimeout(d time.Duration) Option { return func(c *config) { c.liveness = d } }

// WithBudget gives the whole data budget (the pipeline's own is its in-flight share), shown
// on the page and exported as sluice_memory_budget_bytes. Default 0: not shown.
func WithBudget(bytes int64) Option { return func(c *config) { c.budget = bytes } }

// Monitor watches one pipeline. Its methods are safe for concurrent use.
type Monitor struct {
	p       *pipeline.Pipeline
	cfg     config
	running func(dst []flow.Call) []flow.Call // nil: stall tracking off

	mu      sync.Mutex
	view    View    // latest sample
	hist    []point // ring of the last samples
	next    int     // next index of hist to write
	full    bool    // hist wrapped
	samples uint64  // samples taken by Run
	stalled map[callKey]bool

	liveMu      sync.Mutex
	lastDone    uint64    // completed + failed at lastMove
	lastEmitted uint64    // emitted at lastMove
	lastMove    time.Time // when events last completed (or none were in flight)
}

type point struct {
	throughput, lag, inflight, rss float64
}

// New returns a Monitor of p. It takes the first sample at once; Run takes the next ones.
// Unless WithStallThreshold turns it off, it turns on call tracking in p's stages.
func New(p *pipeline.Pipeline, opts ...Option) *Monitor {
	c := config{interval: DefaultSampleInterval, history: DefaultHistory, stall: DefaultStallThreshold, liveness: DefaultLivenessTimeout}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.interval <= 0 {
		c.interval = DefaultSampleInterval
	}
	if c.history < c.interval {
		c.history = c.interval
	}
	if c.liveness <= 0 {
		c.liveness = DefaultLivenessTimeout
	}
	n := int((c.history + c.interval - 1) / c.interval)
	m := &Monitor{p: p, cfg: c, hist: make([]point, max(n, 2)), stalled: map[callKey]bool{}, lastMove: time.Now()}
	if c.stall > 0 {
		m.running = ext.Watch(p)
	}
	s := p.Stats()
	m.lastDone = s.Completed + s.Failed
	m.mu.Lock()
	m.view = m.sample(s, s, 0)
	m.mu.Unlock()
	return m
}

// Run samples the pipeline every sample interval, checks for stalled calls and writes the
// progress line, until ctx is done; then it returns nil. Run it once, on its own goroutine,
// next to the pipeline's Run.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.interval)
	defer t.Stop()
	prev, prevAt := m.p.Stats(), time.Now()
	pr := newProgress(m.cfg.progress, m.cfg.every, prev, prevAt)
	for {
		select {
		case <-ctx.Done():
			pr.end()
			return nil
		case now := <-t.C:
			cur := m.p.Stats()
			m.mu.Lock()
			v := m.sample(prev, cur, now.Sub(prevAt))
			m.push(point{throughput: v.Throughput, lag: float64(v.Source.Lag), inflight: float64(v.InFlightBytes), rss: float64(v.RSSBytes)})
			m.view = v
			m.samples++
			m.mu.Unlock()
			m.checkStalls()
			m.live(now)
			pr.tick(now, cur, v)
			prev, prevAt = cur, now
		}
	}
}

// push appends a point to the history ring. The caller holds mu.
func (m *Monitor) push(p point) {
	m.hist[m.next] = p
	m.next++
	if m.next == len(m.hist) {
		m.next, m.full = 0, true
	}
}

// View returns the latest sample with the history (also /debug/pipeline.json).
func (m *Monitor) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.view
	v.Stages = append([]StageView(nil), v.Stages...)
	v.History = m.history()
	return v
}

// samplesTaken reports how many samples Run took (for tests).
func (m *Monitor) samplesTaken() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.samples
}
