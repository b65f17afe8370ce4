package process_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/sluicehq/sluice/pipeline/process"
)

// A service's main sizes itself to its container, then runs until SIGTERM or SIGINT and
// drains. The budget goes to kafka.Config.Budget. Not run: what it finds depends on the
// machine.
func ExampleFitProcess() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	fit, undo := process.FitProcess(log, process.WithDefaultBudget(32<<20))
	defer undo()
	ctx, stop := process.SignalContext(context.Background(), log)
	defer stop()

	_ = fit.Budget // kafka.Config{Budget: fit.Budget, ...}; pipeline.Run(ctx)
	<-ctx.Done()
}

// FitProcess's split of a cgroup memory limit, shown for a 2 GiB container (MemoryLimit
// reads the real one; 0 means none).
func ExampleMemoryLimit() {
	limit := int64(2 << 30) // in a service: limit, err := process.MemoryLimit()
	fmt.Println("budget", limit/process.BudgetFraction)
	fmt.Println("gomemlimit", int64(float64(limit)*process.MemLimitFraction))
	// Output:
	// budget 536870912
	// gomemlimit 1503238553
}
