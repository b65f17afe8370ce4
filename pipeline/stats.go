package pipeline

import (
	"time"

	"github.com/sluicehq/sluice/stage"
)

// Snapshot is a point-in-time view of a running (or finished) pipeline, for metrics and for
// naming the bottleneck.
type Snapshot struct {
	Name           string
	Stages         []stage.Stats // in pipeline order
	BudgetBytes    int64         // the budget
	WindowBytes    int64         // the in-flight window now: at most BudgetBytes (WithInitialWindow)
	InFlightBytes  int64         // budget bytes held now
	HighWaterBytes int64         // most budget bytes ever held at once; never above BudgetBytes
	InFlightEvents int64         // events emitted and not yet completed
	Emitted        uint64        // events emitted by the source
	Completed      uint64        // events completed ok (committable)
	Failed         uint64        // events completed not ok (fatal error or hard stop)
	TooLarge       uint64        // events larger than the budget, sent to the error handler
}

// Stats returns a snapshot. Safe to call concurrently with Run.
func (p *Pipeline) Stats() Snapshot {
	s := Snapshot{
		Name:           p.cfg.name,
		Stages:         make([]stage.Stats, len(p.nodes)),
		BudgetBytes:    p.budget.Limit(),
		WindowBytes:    p.budget.Window(),
		InFlightBytes:  p.budget.InFlight(),
		HighWaterBytes: p.budget.HighWater(),
		InFlightEvents: p.inFlight(),
		Emitted:        uint64(p.emitted.Load()),
		Completed:      p.completed.Load(),
		Failed:         p.failed.Load(),
		TooLarge:       p.tooLarge.Load(),
	}
	for i, n := range p.nodes {
		s.Stages[i] = n.Stats()
	}
	return s
}

// BusyRatio returns the fraction of its workers' time a stage spent in user code between two
// snapshots of it taken elapsed apart: 1 means every worker was busy all the time.
func BusyRatio(prev, cur stage.Stats, elapsed time.Duration) float64 {
	if elapsed <= 0 || cur.Concurrency == 0 {
		return 0
	}
	return float64(cur.Busy-prev.Busy) / (float64(elapsed) * float64(cur.Concurrency))
}

// Bottleneck names the stage that limits throughput between two snapshots taken elapsed apart:
// the one with the highest busy ratio among the stages whose input queue is at least half
// full now. It returns "" (and 0) when no queue is backed up: the source is the limit.
func Bottleneck(prev, cur Snapshot, elapsed time.Duration) (name string, busy float64) {
	for i, st := range cur.Stages {
		if i >= len(prev.Stages) || st.QueueCap == 0 || st.QueueLen*2 < st.QueueCap {
			continue
		}
		if r := BusyRatio(prev.Stages[i], st, elapsed); name == "" || r > busy {
			name, busy = st.Name, r
		}
	}
	return name, busy
}
