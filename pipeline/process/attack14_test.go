package process_test

// Adversarial tests of the production kit (issue 14), written against the public API only.

import (
	"bufio"
	"flag"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pipeline/process"
)

// TestAttack14EnvFlagsErrorHidesValue: EnvFlags promises errors naming the variable "and not
// its value, which may be a secret". A bad value in the kit's own flag type (Bytes) must not
// come back in the error either.
func TestAttack14EnvFlagsErrorHidesValue(t *testing.T) {
	const secret = "hunter2-s3cret"
	fs := flag.NewFlagSet("svc", flag.ContinueOnError)
	var budget process.Bytes
	fs.Var(&budget, "budget", "data budget")
	debugOn := fs.Bool("debug", true, "")
	n := fs.Int("workers", 1, "")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	t.Setenv("A14_BUDGET", secret)
	t.Setenv("A14_DEBUG", secret)
	t.Setenv("A14_WORKERS", secret)
	err := process.EnvFlags(fs, "A14_")
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for _, v := range []string{"A14_BUDGET", "A14_DEBUG", "A14_WORKERS"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s: %v", v, err)
		}
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("EnvFlags error shows the variable's value: %v", err)
	}
	_, _ = debugOn, n
}

// TestAttack14EnvFlagsPrecedence: a bool set to "false" by the variable overrides a true
// default; -flag=value on the command line wins over the variable; unknown variables with the
// prefix are ignored.
func TestAttack14EnvFlagsPrecedence(t *testing.T) {
	fs := flag.NewFlagSet("svc", flag.ContinueOnError)
	debugOn := fs.Bool("debug", true, "")
	topic := fs.String("out-topic", "d", "")
	group := fs.String("group", "d", "")
	if err := fs.Parse([]string{"-group=cli"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("A14_DEBUG", "false")
	t.Setenv("A14_OUT_TOPIC", "env")
	t.Setenv("A14_GROUP", "env")
	t.Setenv("A14_NO_SUCH_FLAG", "x")
	if err := process.EnvFlags(fs, "A14_"); err != nil {
		t.Fatal(err)
	}
	if *debugOn || *topic != "env" || *group != "cli" {
		t.Fatalf("debug=%v out-topic=%q group=%q, want false env cli", *debugOn, *topic, *group)
	}
}

// TestAttack14MemoryLimitHere: MemoryLimit agrees with the v1 memory controller's files of this
// process's own cgroup on this machine (the smallest limit below 2^62 along its path).
func TestAttack14MemoryLimitHere(t *testing.T) {
	got, err := process.MemoryLimit()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want int64
	sc := bufio.NewScanner(f)
	found := false
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || !strings.Contains(","+parts[1]+",", ",memory,") {
			continue
		}
		found = true
		for dir := filepath.Join("/sys/fs/cgroup/memory", parts[2]); strings.HasPrefix(dir, "/sys/fs/cgroup/memory"); dir = filepath.Dir(dir) {
			b, err := os.ReadFile(filepath.Join(dir, "memory.limit_in_bytes"))
			if err != nil {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err == nil && n < 1<<62 && (want == 0 || n < want) {
				want = n
			}
		}
	}
	if !found {
		t.Logf("no v1 memory controller here; MemoryLimit = %d", got)
		return
	}
	if got != want {
		t.Fatalf("MemoryLimit() = %d, the cgroup files say %d", got, want)
	}
}

// TestAttack14FitProcessTwiceUndoLIFO: two FitProcess calls undone in reverse order leave
// GOMAXPROCS and the Go memory limit as they were.
func TestAttack14FitProcessTwiceUndoLIFO(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	procs, limit := runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1)
	f1, undo1 := process.FitProcess(log)
	f2, undo2 := process.FitProcess(log, process.WithBudget(1<<20))
	if f2.Budget != 1<<20 || f1.Budget <= 0 {
		t.Fatalf("budgets %d %d", f1.Budget, f2.Budget)
	}
	if f1.GOMEMLIMIT == 0 || (f1.MemoryLimit == 0 && f1.GOMEMLIMIT != math.MaxInt64 && os.Getenv("GOMEMLIMIT") == "") {
		t.Fatalf("no cgroup limit but GOMEMLIMIT %d", f1.GOMEMLIMIT)
	}
	undo2()
	undo1()
	if p, l := runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1); p != procs || l != limit {
		t.Fatalf("after undo: GOMAXPROCS %d (was %d), memory limit %d (was %d)", p, procs, l, limit)
	}
}
