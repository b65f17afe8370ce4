package faulttest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/chaos"
	"github.com/sluicehq/sluice/kafka/kafkatest"
)

// TestFaultChaos: random faults from the suite (commit, fetch and heartbeat errors, leaders
// shuffled, partitions and the coordinator moved, slow fetches, members restarting, joining and
// leaving) for SLUICE_CHAOS_DURATION (default 10s) while records flow; then every delivered
// record was processed at least once. `go run ./bench chaos --duration 5m` is the soak.
func TestFaultChaos(t *testing.T) {
	d := 10 * time.Second
	if v := os.Getenv("SLUICE_CHAOS_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("SLUICE_CHAOS_DURATION: %v", err)
		}
	}
	rep, err := chaos.Run(context.Background(), chaos.Config{Duration: d, Rate: 1000, Logger: kafkatest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep)
	if rep.FaultsInjected == 0 || rep.Produced == 0 {
		t.Fatalf("nothing exercised: %+v", rep)
	}
	if rep.Lost != 0 {
		t.Fatalf("%d of %d records lost (seed %d, faults %v)", rep.Lost, rep.Produced, rep.Seed, rep.Faults)
	}
}
