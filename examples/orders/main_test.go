package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/service/servicetest"
	"github.com/sluicehq/sluice/kafka/kafkatest"
)

var stages = []string{"decode", "enrich", "batch", "to-records", "produce"}

func TestRunEmbeddedMetricsAndCleanExit(t *testing.T) {
	committed := make(chan int64, 1)
	base, cancel, code := servicetest.Start(t, run, func(brokers string) {
		n, err := kafkatest.CommittedSum(brokers, "orders-enricher", "orders", 8)
		if err != nil {
			t.Errorf("committed: %v", err)
		}
		committed <- n
	})
	servicetest.WaitReady(t, base)
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	if c, err := servicetest.Status(ctx, base+"/healthz"); err != nil || c != 200 {
		t.Fatalf("/healthz: %d %v", c, err)
	}
	start := time.Now()
	var last error
	err := servicetest.Eventually(ctx, 250*time.Millisecond, func() error {
		mfs, err := servicetest.Scrape(ctx, base+"/metrics")
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
		in := servicetest.StageValues(mfs["sluice_stage_events_in_total"])
		for _, s := range stages {
			if v, ok := in[s]; !ok || v <= 0 {
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
		t.Fatal(err, last)
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
			if a := servicetest.ListenAddr(line); a != "" {
				addrs <- a
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
	servicetest.WaitReady(t, base)
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
