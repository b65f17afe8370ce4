package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/service/servicetest"
	"github.com/sluicehq/sluice/kafka/kafkatest"
)

func TestRouteByKind(t *testing.T) {
	for kind, want := range map[string]string{"payment": "p", "click": "o", "view": "o"} {
		if got := route(kind, "p", "o"); got != want {
			t.Errorf("route(%q) = %q, want %q", kind, got, want)
		}
	}
}

// TestRouterSmoke runs the router on the embedded broker: heartbeats are dropped, invalid
// JSON is dead-lettered, the rest is produced, and the final commit is made.
func TestRouterSmoke(t *testing.T) {
	committed := make(chan int64, 1)
	base, cancel, code := servicetest.Start(t, run, func(brokers string) {
		n, err := kafkatest.CommittedSum(brokers, "router", "events", 4)
		if err != nil {
			t.Errorf("committed: %v", err)
		}
		committed <- n
	})
	servicetest.WaitReady(t, base)
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	err := servicetest.Eventually(ctx, 250*time.Millisecond, func() error {
		mfs, err := servicetest.Scrape(ctx, base+"/metrics")
		if err != nil {
			return err
		}
		in, _ := servicetest.Value(mfs, "sluice_stage_events_in_total", "stage", "drop-heartbeats")
		// The filter counts a dropped message in its Out (as finished), so compare with the
		// next stage's In.
		out, _ := servicetest.Value(mfs, "sluice_stage_events_in_total", "stage", "route")
		produced, _ := servicetest.Value(mfs, "sluice_stage_events_out_total", "stage", "produce")
		dlq, _ := servicetest.Value(mfs, "sluice_dead_letters_total")
		switch {
		case in == 0 || out >= in-64: // route's input edge may hold up to 64
			return errors.New("filter has not dropped a heartbeat yet")
		case produced == 0:
			return errors.New("nothing produced yet")
		case dlq == 0:
			return errors.New("nothing dead-lettered yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	servicetest.WaitExit(t, cancel, code)
	if n := <-committed; n <= 0 {
		t.Fatalf("committed offsets sum %d, want > 0", n)
	}
}
