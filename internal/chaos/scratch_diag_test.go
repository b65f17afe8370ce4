package chaos

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestScratchDiag(t *testing.T) {
	if os.Getenv("DIAG") == "" {
		t.Skip()
	}
	dur, _ := time.ParseDuration(os.Getenv("DIAG_DUR"))
	meta, _ := strconv.Atoi(os.Getenv("DIAG_META"))
	seed, _ := strconv.ParseUint(os.Getenv("DIAG_SEED"), 10, 64)
	f, _ := os.Create(os.Getenv("DIAG_LOG"))
	defer f.Close()
	lg := slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rep, err := Run(context.Background(), Config{Duration: dur, Seed: seed, CommitMetadataMaxBytes: meta, Logger: lg})
	t.Logf("%+v err=%v", rep, err)
}
