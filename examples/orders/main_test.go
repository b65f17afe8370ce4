package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline/observe/observetest"
)

var stages = []string{"decode", "enrich", "batch", "to-records", "produce"}

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

func TestRunEmbeddedMetricsAndCleanExit(t *testing.T) {
	committed := make(chan int64, 1)
	base, cancel, code := start(t, func(brokers string) {
		n, err := kafkatest.CommittedSum(brokers, "orders-enricher", "orders", 8)
		if err != nil {
			t.Errorf("committed: %v", err)
		}
		committed <- n
	})
	observetest.WaitReady(t, base, 30*time.Second)
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	if c, err := observetest.Status(ctx, base+"/healthz"); err != nil || c != 200 {
		t.Fatalf("/healthz: %d %v", c, err)
	}
	start := time.Now()
	err := observetest.Eventually(ctx, 250*time.Millisecond, func() error {
		mfs, err := observetest.Scrape(ctx, base+"/metrics")
		if err != nil {
			return err
		}
		for _, name := range []string{"sluice_stage_events_out_total", "sluice_stage_busy_seconds_total", "sluice_stage_queue_capacity",
			"sluice_inflight_bytes", "sluice_budget_bytes", "sluice_commits_total", "sluice_dead_letters_total", "sluice_bottleneck",
			"sluice_paused_partitions", "go_goroutines", "process_resident_memory_bytes"} {
			if mfs[name] == nil {
				return fmt.Errorf("metric %s missing", name)
			}
		}
		for _, s := range stages {
			if v, ok := observetest.Value(mfs, "sluice_stage_events_in_total", "stage", s); !ok || v <= 0 {
				return fmt.Errorf("sluice_stage_events_in_total{stage=%q} = %v (present %v)", s, v, ok)
			}
		}
		if time.Since(start) < 3*time.Second { // run ~3 s, so a commit and a DLQ record happen
			return fmt.Errorf("running")
		}
		if d := mfs["sluice_dead_letters_total"].GetMetric()[0].GetCounter().GetValue(); d <= 0 {
			return fmt.Errorf("sluice_dead_letters_total = %v", d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit code %d, want 0", c)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not drain")
	}
	if n := <-committed; n <= 0 {
		t.Fatalf("committed offsets sum %d, want > 0", n)
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listenRE = regexp.MustCompile(`msg="http listening" .*addr=(\S+)`)

// TestBinarySIGTERM builds the binary and runs it on the embedded broker (its own process):
// SIGTERM drains it and it exits 0 with its exit line.
func TestBinarySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "orders")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--http", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var logs syncBuffer
	addrs := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(&logs, line)
			if m := listenRE.FindStringSubmatch(line); m != nil {
				addrs <- m[1]
			}
		}
	}()
	var base string
	select {
	case a := <-addrs:
		base = "http://" + a
	case <-time.After(60 * time.Second):
		t.Fatalf("no listen address logged:\n%s", logs.String())
	}
	observetest.WaitReady(t, base, 30*time.Second)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-scanned // stderr closed: the process is exiting
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
	if !bytes.Contains([]byte(logs.String()), []byte("msg=exit service=orders code=0")) {
		t.Fatalf("no clean exit line:\n%s", logs.String())
	}
}
