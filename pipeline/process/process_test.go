package process

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"
)

func withLimit(n int64, err error) FitOption {
	return func(c *fitConfig) { c.limit = func() (int64, error) { return n, err } }
}

func textLog(buf *bytes.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(buf, nil)) }

func TestFitProcess(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "") // restored after the test
	os.Unsetenv("GOMEMLIMIT")
	before := debug.SetMemoryLimit(-1)
	const gib = 1 << 30
	for _, tc := range []struct {
		name                 string
		opts                 []FitOption
		env                  bool
		wantBudget, wantGoML int64
		wantLog              []string
	}{
		{"limit", []FitOption{withLimit(gib, nil)}, false, gib / 4, gib * 7 / 10,
			[]string{"cgroup_memory_limit=1073741824", "budget=268435456", "budget_from=cgroup", "gomemlimit=751619276"}},
		{"limit, budget option", []FitOption{withLimit(gib, nil), WithBudget(8 << 20)}, false, 8 << 20, gib * 7 / 10,
			[]string{"budget=8388608", "budget_from=option"}},
		{"limit, GOMEMLIMIT set", []FitOption{withLimit(gib, nil)}, true, gib / 4, before,
			[]string{"gomemlimit_from_env=true", "budget_from=cgroup"}},
		{"no limit", []FitOption{withLimit(0, nil)}, false, DefaultBudget, before,
			[]string{"cgroup_memory_limit=0", "budget=67108864", "budget_from=default"}},
		{"no limit, default budget option", []FitOption{withLimit(0, nil), WithDefaultBudget(8 << 20), WithBudget(0), nil}, false, 8 << 20, before,
			[]string{"budget=8388608", "budget_from=default"}},
		{"unreadable cgroup", []FitOption{withLimit(0, errors.New("boom"))}, false, DefaultBudget, before,
			[]string{"level=WARN", "no cgroup memory limit", "err=boom", "budget_from=default"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env {
				os.Setenv("GOMEMLIMIT", fmt.Sprint(before)) // the runtime read it at start; only its presence counts here
				defer os.Unsetenv("GOMEMLIMIT")
			}
			var buf bytes.Buffer
			fit, undo := FitProcess(textLog(&buf), tc.opts...)
			got := debug.SetMemoryLimit(-1)
			undo()
			if fit.Budget != tc.wantBudget || fit.GOMEMLIMIT != tc.wantGoML || got != tc.wantGoML || fit.GOMAXPROCS < 1 {
				t.Fatalf("fit %+v, runtime memory limit %d; want budget %d, GOMEMLIMIT %d", fit, got, tc.wantBudget, tc.wantGoML)
			}
			if after := debug.SetMemoryLimit(-1); after != before {
				t.Fatalf("undo left the memory limit at %d, want %d", after, before)
			}
			for _, w := range tc.wantLog {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, buf.String())
				}
			}
		})
	}
	if before == math.MaxInt64 {
		var buf bytes.Buffer
		_, undo := FitProcess(textLog(&buf), withLimit(0, nil))
		undo()
		if !strings.Contains(buf.String(), "gomemlimit=none") {
			t.Errorf("no limit: log lacks gomemlimit=none:\n%s", buf.String())
		}
	}
}

func TestRSS(t *testing.T) {
	if n := rss(fstest.MapFS{"proc/self/statm": file("1000 25 3 1 0 40 0\n")}); n != 25*int64(os.Getpagesize()) {
		t.Fatalf("rss = %d, want %d", n, 25*os.Getpagesize())
	}
	for _, bad := range []fstest.MapFS{{}, {"proc/self/statm": file("1000\n")}, {"proc/self/statm": file("1000 x\n")}} {
		if n := rss(bad); n != 0 {
			t.Fatalf("rss of %v = %d, want 0", bad, n)
		}
	}
	if n := RSS(); n < 1<<20 {
		t.Fatalf("RSS() = %d, want at least 1 MiB for a running test binary", n)
	}
}

// signalChild is set in the child process TestSignalContext starts.
const signalChild = "SLUICE_PROCESS_SIGNAL_CHILD"

// TestSignalContext runs a child process that waits on SignalContext: the first SIGTERM
// cancels its context (it says "draining" and keeps running), the second exits it with
// status 1 at once.
func TestSignalContext(t *testing.T) {
	if os.Getenv(signalChild) == "1" {
		signalChildMain()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSignalContext$", "-test.count=1")
	cmd.Env = append(os.Environ(), signalChild+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	expect := func(want string) {
		t.Helper()
		for lines.Scan() {
			if lines.Text() == want {
				return
			}
		}
		t.Fatalf("child ended before printing %q; stderr:\n%s", want, stderr.String())
	}
	expect("ready")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect("draining")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for lines.Scan() {
		if lines.Text() == "still running" {
			t.Fatal("child ran on after the second signal")
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("child: %v, want exit status 1; stderr:\n%s", err, stderr.String())
	}
	for _, w := range []string{"signal: draining", "second signal: exiting without drain"} {
		if !strings.Contains(stderr.String(), w) {
			t.Errorf("child's log lacks %q:\n%s", w, stderr.String())
		}
	}
}

func signalChildMain() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := SignalContext(context.Background(), log)
	defer stop()
	fmt.Println("ready")
	<-ctx.Done()
	fmt.Println("draining")
	// A drain that never ends: only the second signal stops it (or the parent's deadline).
	time.Sleep(50 * time.Second)
	fmt.Println("still running")
	os.Exit(3)
}

// TestSignalContextStop checks that the parent's cancellation reaches the context and that
// the cancel function may be called twice (its handler goroutine has returned after the first).
func TestSignalContextStop(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	ctx, stop := SignalContext(parent, slog.New(slog.DiscardHandler))
	cancelParent()
	<-ctx.Done() // the parent's cancellation reaches it
	stop()
	stop() // twice is fine
}
