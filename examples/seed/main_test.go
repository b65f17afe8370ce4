package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/service/servicetest"
)

// TestSeedBoundedMemory runs the incident for a few seconds: the downstream is the limit, so
// the budget fills and stays bounded, partitions pause, and the service still drains and
// exits 0 on cancellation.
func TestSeedBoundedMemory(t *testing.T) {
	base, cancel, code := servicetest.Start(t, run, nil, "--budget", "16MiB")
	servicetest.WaitReady(t, base)
	ctx, stop := context.WithTimeout(context.Background(), 40*time.Second)
	defer stop()
	start := time.Now()
	err := servicetest.Eventually(ctx, 250*time.Millisecond, func() error {
		mfs, err := servicetest.Scrape(ctx, base+"/metrics")
		if err != nil {
			return err
		}
		budget, _ := servicetest.Value(mfs, "sluice_budget_bytes")
		high, _ := servicetest.Value(mfs, "sluice_inflight_high_water_bytes")
		if budget != 8<<20 { // the pipeline gets half of --budget (kafka.Plan)
			t.Fatalf("sluice_budget_bytes = %v, want %d", budget, 8<<20)
		}
		if high > budget {
			t.Fatalf("high water %v above budget %v", high, budget)
		}
		for _, s := range []string{"parse", "downstream"} {
			if v, _ := servicetest.Value(mfs, "sluice_stage_events_in_total", "stage", s); v <= 0 {
				return errors.New("no events in " + s)
			}
		}
		if pauses, _ := servicetest.Value(mfs, "sluice_pauses_total"); pauses == 0 {
			return errors.New("no pause yet")
		}
		if time.Since(start) < 3*time.Second {
			return errors.New("running")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	servicetest.WaitExit(t, cancel, code)
}
