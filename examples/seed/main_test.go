package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline/observe/observetest"
)

// start runs the service in process with args (after --http 127.0.0.1:0), its logs in the
// test's output, and returns its HTTP base URL, a cancel (the in-process SIGTERM) and its
// exit code. drained, if set, gets the broker's address once the pipeline drained.
func start(t *testing.T, drained func(brokers string), args ...string) (string, context.CancelFunc, <-chan int) {
	t.Helper()
	addrs := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	h := hooks{listening: func(a string) { addrs <- a }, drained: drained}
	code := make(chan int, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		code <- run(ctx, append([]string{"--http", "127.0.0.1:0"}, args...), t.Output(), h)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Error("run did not return after cancel")
		}
	})
	select {
	case a := <-addrs:
		return "http://" + a, cancel, code
	case c := <-code:
		t.Fatalf("run exited early with %d", c)
	case <-time.After(60 * time.Second): // the first run builds the broker's binary
		t.Fatal("no HTTP address reported")
	}
	return "", nil, nil
}

// waitExit cancels the run and waits for a clean exit (code 0).
func waitExit(t *testing.T, cancel context.CancelFunc, code <-chan int) {
	t.Helper()
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit code %d, want 0", c)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not drain within 60s")
	}
}

// TestSeedBoundedMemory runs the incident for a few seconds: the downstream is the limit, so
// the backlog grows in Kafka (the consumer lag: the source stops taking records, by not
// polling or by pausing its partitions) while the bytes in flight stay within the budget, and
// the service still drains and exits 0 on cancellation.
func TestSeedBoundedMemory(t *testing.T) {
	base, cancel, code := start(t, nil, "--budget", "16MiB")
	observetest.WaitReady(t, base, 30*time.Second)
	ctx, stop := context.WithTimeout(context.Background(), 40*time.Second)
	defer stop()
	start := time.Now()
	err := observetest.Eventually(ctx, 250*time.Millisecond, func() error {
		mfs, err := observetest.Scrape(ctx, base+"/metrics")
		if err != nil {
			return err
		}
		budget, _ := observetest.Value(mfs, "sluice_budget_bytes")
		high, _ := observetest.Value(mfs, "sluice_inflight_high_water_bytes")
		if budget != 8<<20 { // the pipeline gets half of --budget (kafka.Plan)
			t.Fatalf("sluice_budget_bytes = %v, want %d", budget, 8<<20)
		}
		if high > budget {
			t.Fatalf("high water %v above budget %v", high, budget)
		}
		for _, s := range []string{"parse", "downstream"} {
			if v, _ := observetest.Value(mfs, "sluice_stage_events_in_total", "stage", s); v <= 0 {
				return errors.New("no events in " + s)
			}
		}
		var lag float64 // summed over the partitions
		if mf := mfs["sluice_consumer_lag_records"]; mf != nil {
			for _, m := range mf.GetMetric() {
				lag += m.GetGauge().GetValue()
			}
		}
		if lag < 2000 { // the input outruns the downstream by about 480 records/s
			return fmt.Errorf("consumer lag %v: the backlog is not in Kafka yet", lag)
		}
		// The backlog stays there: librdkafka (a meter the pipeline does not own) fetched little
		// more than the records the pipeline took, not the input's 980/s.
		rx, ok := observetest.Value(mfs, "sluice_librdkafka_rx_bytes_total")
		emitted, _ := observetest.Value(mfs, "sluice_events_emitted_total")
		if !ok {
			return errors.New("no librdkafka statistics yet")
		}
		if limit := emitted*(48<<10) + (32 << 20); rx > limit {
			t.Fatalf("librdkafka fetched %.0f bytes for %.0f records taken (limit %.0f): the backlog is in the process, not in Kafka", rx, emitted, limit)
		}
		if time.Since(start) < 3*time.Second {
			return errors.New("running")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitExit(t, cancel, code)
}
