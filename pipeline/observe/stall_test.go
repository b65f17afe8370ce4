package observe

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/pipeline"
)

// gather returns the value of metric name with label stage=st from c (false if absent).
func gather(t *testing.T, c prometheus.Collector, name, st string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelOf(m, "stage") == st {
				if m.Gauge != nil {
					return m.Gauge.GetValue(), true
				}
				return m.Counter.GetValue(), true
			}
		}
	}
	return 0, false
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestStallReported: a sink call blocked on a channel past a 50 ms threshold is reported once:
// sluice_stage_stalled_calls{stage="store"} is 1 and the longest call exceeds the threshold,
// the page's JSON lists it, and one Warn line names the stage, the record's topic, partition
// and offset, and a stack holding the user function. Once released, the gauge returns to 0.
// Also with a call pool (WithMaxCalls), where the call runs on a pool goroutine rather than
// on the stage's worker.
func TestStallReported(t *testing.T) {
	t.Run("workers", func(t *testing.T) { testStall(t) })
	t.Run("call-pool", func(t *testing.T) { testStall(t, pipeline.WithMaxCalls(1)) })
}

func testStall(t *testing.T, opts ...pipeline.Option) {
	release := make(chan struct{})
	defer close(release)
	p := gatedPipeline(t, 10, 7, release, opts...)
	var logs syncBuffer
	m := New(p, WithStallThreshold(50*time.Millisecond), WithSampleInterval(10*time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	runBoth(t, m, p)

	waitFor(t, "the stall log line", func() bool { return strings.Contains(logs.String(), "stage call stalled") })
	line := logs.String()
	for _, want := range []string{"level=WARN", "stage=store", "topic=orders", "partition=2", "offset=7", "stuckInUserCode"} {
		if !strings.Contains(line, want) {
			t.Errorf("stall log lacks %q:\n%s", want, line)
		}
	}
	if v, ok := gather(t, m.Collector(), "sluice_stage_stalled_calls", "store"); !ok || v != 1 {
		t.Errorf("sluice_stage_stalled_calls{stage=store} = %v (present %v), want 1", v, ok)
	}
	if v, _ := gather(t, m.Collector(), "sluice_stage_stalled_calls", "parse"); v != 0 {
		t.Errorf("sluice_stage_stalled_calls{stage=parse} = %v, want 0", v)
	}
	if v, _ := gather(t, m.Collector(), "sluice_stage_longest_call_seconds", "store"); v < 0.05 {
		t.Errorf("sluice_stage_longest_call_seconds{stage=store} = %v, want > 0.05", v)
	}
	// Once per call: more samples pass, still one line.
	n := m.samplesTaken()
	waitFor(t, "five more samples", func() bool { return m.samplesTaken() >= n+5 })
	if c := strings.Count(logs.String(), "stage call stalled"); c != 1 {
		t.Errorf("%d stall lines for one call, want 1:\n%s", c, logs.String())
	}
	v := m.View()
	if len(v.Stalled) != 1 || v.Stalled[0].Stage != "store" || v.Stalled[0].Offset != 7 || v.Stalled[0].Topic != "orders" {
		t.Errorf("View().Stalled = %+v, want the store call at orders[2]@7", v.Stalled)
	}

	release <- struct{}{} // unblock the call (the deferred close then finds it closed by nobody)
	waitFor(t, "the stall to clear", func() bool {
		v, _ := gather(t, m.Collector(), "sluice_stage_stalled_calls", "store")
		return v == 0
	})
}

// TestStallTrackingOff: with WithStallThreshold(0) nothing is tracked and the stall metrics
// are not exported.
func TestStallTrackingOff(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	p := gatedPipeline(t, 10, 3, release)
	m := New(p, WithStallThreshold(0))
	if _, ok := gather(t, m.Collector(), "sluice_stage_stalled_calls", "store"); ok {
		t.Error("sluice_stage_stalled_calls exported with tracking off")
	}
	if m.running != nil {
		t.Error("tracking on with threshold 0")
	}
}
