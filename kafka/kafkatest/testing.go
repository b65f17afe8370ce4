package kafkatest

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
)

// FastGroup returns librdkafka consumer overrides that make group joins and rebalances quick
// against the embedded broker (100 ms heartbeats, 6 s session timeout, 50 ms fetch wait). A
// new map each call: callers may add to it.
func FastGroup() map[string]any {
	return map[string]any{"heartbeat.interval.ms": 100, "session.timeout.ms": 6000, "fetch.wait.max.ms": 50}
}

// Logger returns the logger for tests: it discards everything unless SLUICE_TEST_LOG is set,
// then it writes every level to stderr.
func Logger() *slog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// WaitFor polls cond every 10 ms until it holds, and fails t naming what it waited for if d
// passes first. It is for conditions no signal reports across the broker (offsets committed,
// records consumed by another client, a group rebalanced).
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
