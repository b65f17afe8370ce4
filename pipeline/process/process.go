// Package process sizes a sluice service to the container it runs in and drains it on
// signals: the cgroup memory limit of this process (MemoryLimit), GOMAXPROCS, GOMEMLIMIT and
// the data budget derived from it (FitProcess), a context cancelled by SIGTERM/SIGINT
// (SignalContext), and the resident set size (RSS).
//
// Nothing here is global state the caller does not ask for: FitProcess changes GOMAXPROCS
// and the Go memory limit and returns the undo; SignalContext's cancel stops its signal
// handling.
package process

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/automaxprocs/maxprocs"
)

// DefaultBudget is the data budget FitProcess returns when there is no cgroup memory limit
// and no WithBudget or WithDefaultBudget option: 64 MiB, kafka.DefaultBudget.
const DefaultBudget = 64 << 20

// BudgetFraction is the share of the cgroup memory limit FitProcess gives the data budget:
// a quarter. kafka.Plan splits the budget into the pipeline's in-flight bytes, librdkafka's
// prefetch and the producer queue, and the Go heap may hold up to twice the in-flight bytes
// before a GC, so a quarter leaves room for the runtime, librdkafka's threads, the binary and
// garbage under GOMEMLIMIT.
const BudgetFraction = 4

// MemLimitFraction is the share of the cgroup memory limit FitProcess sets as the Go soft
// memory limit (GOMEMLIMIT) unless the GOMEMLIMIT variable is set: 70 %, leaving 30 % to
// librdkafka's C heap, which the Go runtime does not see.
const MemLimitFraction = 0.7

// Fit is what FitProcess found and set.
type Fit struct {
	GOMAXPROCS  int   // in effect after automaxprocs
	MemoryLimit int64 // the cgroup memory limit (MemoryLimit), 0: none
	GOMEMLIMIT  int64 // the Go soft memory limit in effect after FitProcess; math.MaxInt64: none
	Budget      int64 // the whole data budget for kafka.Config.Budget
}

// FitOption changes FitProcess's defaults.
type FitOption func(*fitConfig)

type fitConfig struct {
	budget, defaultBudget int64
	limit                 func() (int64, error)
}

// WithBudget fixes the data budget (a --budget flag): the cgroup limit then sets only
// GOMEMLIMIT. A value of 0 or less is ignored.
func WithBudget(bytes int64) FitOption {
	return func(c *fitConfig) {
		if bytes > 0 {
			c.budget = bytes
		}
	}
}

// WithDefaultBudget sets the budget used when there is no cgroup memory limit (default
// DefaultBudget). A value of 0 or less is ignored.
func WithDefaultBudget(bytes int64) FitOption {
	return func(c *fitConfig) {
		if bytes > 0 {
			c.defaultBudget = bytes
		}
	}
}

// FitProcess sizes the process to its cgroup and logs one line ("process: sizing") with what
// it found and set:
//   - GOMAXPROCS from the CPU quota by go.uber.org/automaxprocs (its own message is logged
//     too). It leaves GOMAXPROCS alone when the GOMAXPROCS variable is set or there is no
//     quota; when it sets it, the Go runtime (1.25+) stops adjusting it to quota changes.
//   - GOMEMLIMIT = MemLimitFraction of the cgroup memory limit, unless the GOMEMLIMIT
//     variable is set or there is no limit.
//   - Budget = the limit / BudgetFraction, unless WithBudget fixed it; without a limit the
//     WithDefaultBudget value (DefaultBudget).
//
// A failure to read the cgroup (MemoryLimit's error) is logged as a warning and counts as no
// limit. The returned function restores GOMAXPROCS and the memory limit; call it once, when
// the service exits (tests call it to leave the process as they found it).
func FitProcess(log *slog.Logger, opts ...FitOption) (Fit, func()) {
	if log == nil {
		log = slog.Default()
	}
	c := fitConfig{defaultBudget: DefaultBudget, limit: MemoryLimit}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	undoProcs, err := maxprocs.Set(maxprocs.Logger(func(format string, a ...any) { log.Info(fmt.Sprintf(format, a...)) }))
	if err != nil {
		log.Warn("process: automaxprocs", "err", err)
	}
	limit, err := c.limit()
	if err != nil {
		level := slog.LevelWarn
		if errors.Is(err, fs.ErrNotExist) { // not Linux: nothing to find
			level = slog.LevelInfo
		}
		log.Log(context.Background(), level, "process: no cgroup memory limit", "err", err)
		limit = 0
	}
	f := Fit{MemoryLimit: limit, Budget: c.budget}
	source := "option"
	switch {
	case c.budget > 0:
	case limit > 0:
		f.Budget, source = limit/BudgetFraction, "cgroup"
	default:
		f.Budget, source = c.defaultBudget, "default"
	}
	undoMem := func() {}
	_, envSet := os.LookupEnv("GOMEMLIMIT")
	if limit > 0 && !envSet {
		prev := debug.SetMemoryLimit(int64(float64(limit) * MemLimitFraction))
		undoMem = func() { debug.SetMemoryLimit(prev) }
	}
	f.GOMAXPROCS, f.GOMEMLIMIT = runtime.GOMAXPROCS(0), debug.SetMemoryLimit(-1)
	gomem := "none"
	if f.GOMEMLIMIT != math.MaxInt64 {
		gomem = strconv.FormatInt(f.GOMEMLIMIT, 10)
	}
	log.Info("process: sizing", "gomaxprocs", f.GOMAXPROCS, "cgroup_memory_limit", limit, "gomemlimit", gomem,
		"gomemlimit_from_env", envSet, "budget", f.Budget, "budget_from", source)
	return f, func() {
		undoMem()
		if undoProcs != nil {
			undoProcs()
		}
	}
}

// SignalContext returns a context cancelled by the first SIGTERM or SIGINT (the service then
// drains: its pipeline finishes what it took and commits); a second signal exits the process
// at once with status 1, without draining. Both are logged. The cancel function stops the
// signal handling (later signals get Go's default behaviour again) and cancels the context;
// call it when the service returns. Cancelling ctx cancels the returned context too.
func SignalContext(ctx context.Context, log *slog.Logger) (context.Context, context.CancelFunc) {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case s := <-sigs:
			log.Info("signal: draining (send again to exit now)", "signal", s.String())
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			log.Error("second signal: exiting without drain", "signal", s.String())
			os.Exit(1)
		case <-done:
		}
	}()
	var once sync.Once // a CancelFunc may be called more than once, concurrently
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			<-exited // no goroutine outlives the caller
		})
		cancel()
	}
}

// RSS returns the resident set size of this process in bytes from /proc/self/statm, or 0
// when it cannot be read (not Linux).
func RSS() int64 { return rss(os.DirFS("/")) }

func rss(fsys fs.FS) int64 {
	b, err := fs.ReadFile(fsys, "proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
