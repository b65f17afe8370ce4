package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka/kafkatest"
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
	base, cancel, code := start(t, func(brokers string) {
		n, err := kafkatest.CommittedSum(brokers, "router", "events", 4)
		if err != nil {
			t.Errorf("committed: %v", err)
		}
		committed <- n
	})
	observetest.WaitReady(t, base, 30*time.Second)
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	err := observetest.Eventually(ctx, 250*time.Millisecond, func() error {
		mfs, err := observetest.Scrape(ctx, base+"/metrics")
		if err != nil {
			return err
		}
		in, _ := observetest.Value(mfs, "sluice_stage_events_in_total", "stage", "drop-heartbeats")
		// The filter counts a dropped message in its Out (as finished), so compare with the
		// next stage's In.
		out, _ := observetest.Value(mfs, "sluice_stage_events_in_total", "stage", "route")
		produced, _ := observetest.Value(mfs, "sluice_stage_events_out_total", "stage", "produce")
		dlq, _ := observetest.Value(mfs, "sluice_dead_letters_total")
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
	waitExit(t, cancel, code)
	if n := <-committed; n <= 0 {
		t.Fatalf("committed offsets sum %d, want > 0", n)
	}
}
