package observe

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCollector: after a pipeline of 10 events finished, the Collector reports the stage and
// pipeline counters exactly, includes the Source's metrics, and passes Prometheus's metric
// lint (units in names, _total on counters).
func TestCollector(t *testing.T) {
	release := make(chan struct{})
	close(release)
	p := gatedPipeline(t, 10, -1, release)
	m := New(p, WithSource(newFakeSource(SourceSummary{})), WithBudget(1<<20))
	stop := runBoth(t, m, p)
	waitFor(t, "10 completions", func() bool { return p.Stats().Completed == 10 })
	stop()
	c := m.Collector()
	want := `
# HELP fake_source_up Test source.
# TYPE fake_source_up gauge
fake_source_up 1
# HELP sluice_events_completed_total Events completed ok (committable).
# TYPE sluice_events_completed_total counter
sluice_events_completed_total 10
# HELP sluice_inflight_events Source events emitted and not yet completed.
# TYPE sluice_inflight_events gauge
sluice_inflight_events 0
# HELP sluice_memory_budget_bytes The whole data budget (observe.WithBudget).
# TYPE sluice_memory_budget_bytes gauge
sluice_memory_budget_bytes 1.048576e+06
# HELP sluice_stage_events_in_total Messages a stage took from its input.
# TYPE sluice_stage_events_in_total counter
sluice_stage_events_in_total{stage="parse"} 10
sluice_stage_events_in_total{stage="store"} 10
# HELP sluice_stage_events_out_total Messages a stage emitted (or finished, for sinks).
# TYPE sluice_stage_events_out_total counter
sluice_stage_events_out_total{stage="parse"} 10
sluice_stage_events_out_total{stage="store"} 10
# HELP sluice_stage_stalled_calls Calls of a stage running longer than the stall threshold now.
# TYPE sluice_stage_stalled_calls gauge
sluice_stage_stalled_calls{stage="parse"} 0
sluice_stage_stalled_calls{stage="store"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "fake_source_up", "sluice_events_completed_total",
		"sluice_inflight_events", "sluice_memory_budget_bytes", "sluice_stage_events_in_total", "sluice_stage_events_out_total",
		"sluice_stage_stalled_calls"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("lint: %s: %s", pr.Metric, pr.Text)
	}
	// 14 metrics per stage (2 stages), sluice_bottleneck's source row, 9 pipeline metrics, the source's one.
	if n := testutil.CollectAndCount(c); n != 2*14+1+9+1 {
		t.Errorf("%d metrics, want %d", n, 2*14+1+9+1)
	}
}
