package chaos

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// TestReportJSONContract: chaos.json keeps the field names outside checks read.
func TestReportJSONContract(t *testing.T) {
	b, err := json.Marshal(Report{Scenario: "chaos"})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "duration_s", "faults_injected", "produced", "processed_unique", "lost", "duplicates", "peak_rss_bytes"} {
		if _, ok := m[k]; !ok {
			t.Errorf("chaos.json lacks %q: %s", k, b)
		}
	}
	if m["scenario"] != "chaos" {
		t.Errorf("scenario %v", m["scenario"])
	}
}

// TestChaosSeedPicksFaults: the seed alone decides which faults a run injects, so a soak can
// be repeated (with commit metadata on and off, say) against the same faults. Drawing from a
// map's iteration order (random in Go) gave a different sequence each run.
func TestChaosSeedPicksFaults(t *testing.T) {
	kinds := map[string]int{}
	for _, k := range []string{"commit_errors", "not_coordinator", "fetch_errors", "heartbeat_errors", "leaders_shuffled",
		"coordinator_moved", "partition_moved", "slow_fetches", "member_restart", "member_join_leave"} {
		kinds[k] = 0
	}
	draw := func(seed uint64) []string {
		names := faultNames(kinds)
		rng := rand.New(rand.NewPCG(seed, seed>>1))
		out := make([]string, 50)
		for i := range out {
			out[i] = names[rng.IntN(len(names))]
		}
		return out
	}
	first := draw(1795636591742349974)
	for range 5 {
		if again := draw(1795636591742349974); !slices.Equal(first, again) {
			t.Fatalf("one seed drew two fault sequences:\n%v\n%v", first, again)
		}
	}
}

// TestChaosFinalWaitFollowsProgress: the final wait goes on for as long as the consumers keep
// processing records, however long that takes (here 10 × the idle limit), and gives up only
// once they stop. A fixed deadline reported a slow drain on a loaded machine as lost records.
func TestChaosFinalWaitFollowsProgress(t *testing.T) {
	const idle = 100 * time.Millisecond
	var n atomic.Int64
	stop := make(chan struct{})
	go func() { // one record every 10 ms: 100 records take 10 × idle
		for range 100 {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
				n.Add(1)
			}
		}
	}()
	defer close(stop)
	if !awaitAll(context.Background(), n.Load, 100, idle, func() {}) {
		t.Fatalf("gave up at %d of 100 while records were still being processed", n.Load())
	}
	began := time.Now()
	if awaitAll(context.Background(), n.Load, 101, idle, func() {}) { // no more will come
		t.Fatal("reported everything processed")
	}
	if waited := time.Since(began); waited < idle {
		t.Fatalf("gave up after %v, before the idle limit %v", waited, idle)
	}
}
