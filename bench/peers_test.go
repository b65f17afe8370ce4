package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPeersShort builds the bench/peers module (its own go.mod; the first build fetches its
// modules) and runs the peers scenario for a few seconds with sluice and one peer (franz-go,
// pool of workers) on the embedded broker, then checks peers.json's contract and that both
// consumers processed records with nothing lost or duplicated, so a broken peer module or
// worker protocol fails here.
func TestPeersShort(t *testing.T) {
	dir := t.TempDir()
	if err := run([]string{"peers", "--duration", "5s", "--runs", "sluice,kgo-pool", "--out", dir}, os.Stdout); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "peers.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "peers.svg")); err != nil || st.Size() == 0 {
		t.Fatalf("peers.svg: %v", err)
	}
	hasAll(t, "peers", keys(t, b), "scenario", "duration_s", "input_rate", "message_bytes", "sink_capacity_per_s", "runs")
	var raw struct{ Runs []json.RawMessage }
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, r := range raw.Runs {
		hasAll(t, "peers run", keys(t, r), "name", "peak_rss_bytes", "throughput_per_s", "processed", "lost", "duplicates", "library", "config")
	}
	var r PeersResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Scenario != "peers" || len(r.Runs) != 2 || r.Runs[0].Name != "sluice" || r.Runs[1].Name != "kgo-pool" {
		t.Fatalf("peers.json: scenario %q, %d runs", r.Scenario, len(r.Runs))
	}
	if lib := r.Runs[1].Library; !strings.HasPrefix(lib, "github.com/twmb/franz-go v1.") {
		t.Errorf("kgo-pool library = %q, want franz-go with its version", lib)
	}
	for _, run := range r.Runs {
		if run.Processed == 0 || run.Throughput <= 0 || run.PeakRSS == 0 || len(run.Samples) < 5 || run.Lost != 0 || run.Duplicates != 0 {
			t.Errorf("%s: processed %d (%.0f/s), peak RSS %d, %d samples, lost %d, duplicates %d", run.Name,
				run.Processed, run.Throughput, run.PeakRSS, len(run.Samples), run.Lost, run.Duplicates)
		}
		t.Logf("%s: peak %.0f MiB, %.0f/s, processed %d", run.Name, mib(run.PeakRSS), run.Throughput, run.Processed)
	}
}
