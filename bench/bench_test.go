package main

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"
)

// TestMain lets the test binary act as a re-executed bench child (worker, produce).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func keys(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func hasAll(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	set := map[string]bool{}
	for _, k := range got {
		set[k] = true
	}
	for _, w := range want {
		if !set[w] {
			t.Errorf("%s: missing field %q (have %v)", what, w, got)
		}
	}
}

func roundTrip[T any](t *testing.T, dir, scenario string, v T) json.RawMessage {
	t.Helper()
	p, err := writeJSON(dir, scenario, v)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var back T
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, v) {
		t.Fatalf("%s round trip:\n got %+v\nwant %+v", scenario, back, v)
	}
	return b
}

func TestJSONContract(t *testing.T) {
	dir := t.TempDir()
	seed := SeedResult{loadHeader: loadHeader{Scenario: "seed", Duration: 60, InputRate: 980, MessageBytes: 40960, SinkCapacityPerS: 500},
		Runs: []SeedRun{{Name: "naive", PeakRSS: 1 << 30, RSSSlope: 1.5, Processed: 10, Throughput: 5, Lost: 3, Duplicates: 1, FinalLag: 7,
			Samples: []Sample{{T: 0.5, RSS: 100, Processed: 1}}}, {Name: "sluice", BudgetBytes: 64 << 20}}}
	raw := roundTrip(t, dir, "seed", seed)
	hasAll(t, "seed", keys(t, raw), "scenario", "duration_s", "input_rate", "message_bytes", "sink_capacity_per_s", "runs")
	var top struct{ Runs []json.RawMessage }
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	for _, r := range top.Runs {
		hasAll(t, "seed run", keys(t, r), "name", "budget_bytes", "peak_rss_bytes", "rss_slope_bytes_per_s", "processed",
			"throughput_per_s", "lost", "duplicates", "final_lag")
	}

	e2e := E2EResult{Scenario: "e2e", Results: []E2ERow{{MessageBytes: 100, BareMsgsPerS: 2, SluiceMsgsPS: 1, Ratio: 0.5, BareRounds: []float64{2}, SluiceRounds: []float64{1}}}}
	raw = roundTrip(t, dir, "e2e", e2e)
	hasAll(t, "e2e", keys(t, raw), "scenario", "results")
	var e struct{ Results []json.RawMessage }
	_ = json.Unmarshal(raw, &e)
	hasAll(t, "e2e row", keys(t, e.Results[0]), "message_bytes", "bare_msgs_per_s", "sluice_msgs_per_s", "ratio")

	sw := SweepResult{Scenario: "sweep", Results: []SweepRow{{MessageBytes: 1024, BudgetBytes: 8 << 20, MsgsPerS: 3, PeakRSS: 4}}}
	raw = roundTrip(t, dir, "sweep", sw)
	hasAll(t, "sweep", keys(t, raw), "scenario", "results")
	var s struct{ Results []json.RawMessage }
	_ = json.Unmarshal(raw, &s)
	hasAll(t, "sweep row", keys(t, s.Results[0]), "message_bytes", "budget_bytes", "msgs_per_s", "peak_rss_bytes")

	// The plots render from these structs.
	if err := plotSeed(seed, filepath.Join(dir, "seed.svg")); err != nil {
		t.Fatal(err)
	}
	if err := plotE2E(e2e, filepath.Join(dir, "e2e.svg")); err != nil {
		t.Fatal(err)
	}
	if err := plotSweep(sw, filepath.Join(dir, "sweep.svg")); err != nil {
		t.Fatal(err)
	}
}

func TestSlope(t *testing.T) {
	var x, y []float64
	for i := range 100 {
		x = append(x, float64(i)/2)
		y = append(y, 3e6*float64(i)/2+42)
	}
	if got := slope(x, y); math.Abs(got-3e6) > 1e-3 {
		t.Fatalf("slope = %v, want 3e6", got)
	}
	// Second half only: flat then rising at 1 MB/s.
	var ss []Sample
	for i := range 40 {
		tt := float64(i) / 2
		rss := int64(50e6)
		if tt >= 10 {
			rss += int64((tt - 10) * 1e6)
		}
		ss = append(ss, Sample{T: tt, RSS: rss})
	}
	if got := rssSlopeSecondHalf(ss); math.Abs(got-1e6) > 1 {
		t.Fatalf("second-half slope = %v, want 1e6", got)
	}
	if slope([]float64{1}, []float64{1}) != 0 || peakRSS(ss) != int64(50e6+9.5e6) {
		t.Fatal("degenerate slope or peak")
	}
}

func TestRSSSampler(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	self, err := readRSS(os.Getpid())
	if err != nil || self <= 0 {
		t.Fatalf("own RSS = %d, %v", self, err)
	}
	cmd := exec.Command("sleep", "2")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep command:", err)
	}
	defer cmd.Wait()
	s := StartSampler(cmd.Process.Pid, 100*time.Millisecond, func() int64 { return 7 }, nil)
	time.Sleep(600 * time.Millisecond)
	ss := s.Stop()
	if len(ss) < 3 {
		t.Fatalf("%d samples", len(ss))
	}
	for _, sm := range ss {
		if sm.RSS <= 0 || sm.Processed != 7 {
			t.Fatalf("bad sample %+v", sm)
		}
	}
	for i := 1; i < len(ss); i++ {
		if ss[i].T <= ss[i-1].T {
			t.Fatalf("times not increasing: %+v", ss)
		}
	}
}

// TestSeedShort runs the seed scenario end to end on the embedded broker for a few seconds.
func TestSeedShort(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	if err := run([]string{"seed", "--duration", "6s", "--out", dir}, os.Stdout); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "seed.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "seed.svg")); err != nil || st.Size() == 0 {
		t.Fatalf("seed.svg: %v", err)
	}
	var r SeedResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Runs) != 2 || r.Runs[0].Name != "naive" || r.Runs[1].Name != "sluice" {
		t.Fatalf("runs: %+v", r.Runs)
	}
	sl := r.Runs[1]
	if sl.Lost != 0 {
		t.Fatalf("sluice lost %d", sl.Lost)
	}
	if sl.Processed == 0 || sl.PeakRSS == 0 || len(sl.Samples) < 5 {
		t.Fatalf("sluice run looks empty: processed=%d peak=%d samples=%d", sl.Processed, sl.PeakRSS, len(sl.Samples))
	}
	t.Logf("naive: peak %.0f MiB processed %d lost %d; sluice: peak %.0f MiB processed %d lost %d",
		mib(r.Runs[0].PeakRSS), r.Runs[0].Processed, r.Runs[0].Lost, mib(sl.PeakRSS), sl.Processed, sl.Lost)
}

// TestSeedKafkaShort runs the seed scenario with the Kafka downstream for a few seconds: the
// output topic limited by the embedded broker, seed-kafka.json's shape, and the sluice run's
// outcome read back from the output topic (every committed input record copied, none twice).
func TestSeedKafkaShort(t *testing.T) {
	dir := t.TempDir()
	if err := run([]string{"seed", "--downstream", "kafka", "--duration", "6s", "--out", dir}, os.Stdout); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "seed-kafka.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "seed-kafka.svg")); err != nil || st.Size() == 0 {
		t.Fatalf("seed-kafka.svg: %v", err)
	}
	hasAll(t, "seed-kafka", keys(t, b), "scenario", "downstream", "duration_s", "input_rate", "message_bytes", "sink_capacity_per_s", "runs")
	var r SeedResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Scenario != "seed" || r.Downstream != "kafka" || r.SinkCapacityPerS != 500 || len(r.Runs) != 2 || r.Runs[0].Name != "naive" || r.Runs[1].Name != "sluice" {
		t.Fatalf("seed-kafka.json: scenario %q downstream %q capacity %v runs %+v", r.Scenario, r.Downstream, r.SinkCapacityPerS, r.Runs)
	}
	sl := r.Runs[1]
	if sl.Lost != 0 || sl.Duplicates != 0 || sl.Committed == 0 || sl.Processed < sl.Committed || sl.PeakRSS == 0 || len(sl.Samples) < 5 {
		t.Fatalf("sluice: lost %d duplicates %d committed %d processed %d peak %d samples %d",
			sl.Lost, sl.Duplicates, sl.Committed, sl.Processed, sl.PeakRSS, len(sl.Samples))
	}
	t.Logf("naive: peak %.0f MiB output %d lost %d; sluice: peak %.0f MiB output %d (%.0f/s) lost %d",
		mib(r.Runs[0].PeakRSS), r.Runs[0].Processed, r.Runs[0].Lost, mib(sl.PeakRSS), sl.Processed, sl.Throughput, sl.Lost)
}

// TestScaleShort runs the scale scenario end to end (two processes, then the rolling restart
// of a three-process static group) on the embedded broker for a few seconds per run, and
// checks scale.json's shape and the rolling restart's outcome: nothing lost, nothing processed
// twice, no partition moved between members.
func TestScaleShort(t *testing.T) {
	dir := t.TempDir()
	if err := run([]string{"scale", "--replicas", "2", "--rolling", "--duration", "8s", "--out", dir}, os.Stdout); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "scale.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "scale.svg")); err != nil || st.Size() == 0 {
		t.Fatalf("scale.svg: %v", err)
	}
	var raw struct {
		Runs    []json.RawMessage
		Rolling json.RawMessage
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	hasAll(t, "scale", keys(t, b), "scenario", "budget_bytes", "runs", "rolling")
	for _, r := range raw.Runs {
		hasAll(t, "scale run", keys(t, r), "replicas", "throughput_per_s", "lag_slope_per_s", "peak_rss_bytes_max", "lost", "duplicates")
	}
	hasAll(t, "rolling", keys(t, raw.Rolling), "restarts", "rebalances", "partitions_moved", "lost", "duplicates")
	var r ScaleResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Scenario != "scale" || r.BudgetBytes != 64<<20 || len(r.Runs) != 1 || r.Runs[0].Replicas != 2 || r.Rolling == nil {
		t.Fatalf("scale.json: scenario %q budget %d runs %+v rolling %v", r.Scenario, r.BudgetBytes, len(r.Runs), r.Rolling != nil)
	}
	two := r.Runs[0]
	if two.Lost != 0 || two.Processed == 0 || two.PeakRSSMax == 0 || len(two.PeakRSS) != 2 || len(two.Samples) < 5 {
		t.Fatalf("2 processes: lost %d processed %d peak %v samples %d", two.Lost, two.Processed, two.PeakRSS, len(two.Samples))
	}
	ro := r.Rolling
	if ro.Restarts != 3 || ro.Lost != 0 || ro.Duplicates != 0 || ro.PartitionsMoved != 0 || ro.Processed == 0 {
		t.Fatalf("rolling: restarts %d lost %d duplicates %d partitions moved %d processed %d (members %+v)",
			ro.Restarts, ro.Lost, ro.Duplicates, ro.PartitionsMoved, ro.Processed, ro.Members)
	}
	t.Logf("2 processes: %.0f msg/s, lag slope %+.0f/s, peak RSS %.0f MiB; rolling: %d rebalances, members %+v",
		two.Throughput, two.LagSlope, mib(two.PeakRSSMax), ro.Rebalances, ro.Members)
}

// TestEOSShort runs the eos scenario end to end on the embedded broker with a small backlog
// and a short paced phase, and checks eos.json's contract (scenario, the three default runs
// with their modes and commit intervals, each run's fields) and that the read_committed reader
// saw every input exactly once in every run.
func TestEOSShort(t *testing.T) {
	dir := t.TempDir()
	if err := run([]string{"eos", "--records", "3000", "--duration", "2s", "--rate", "500", "--rounds", "1", "--out", dir}, os.Stdout); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "eos.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "eos.svg")); err != nil || st.Size() == 0 {
		t.Fatalf("eos.svg: %v", err)
	}
	var raw struct{ Runs []json.RawMessage }
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	hasAll(t, "eos", keys(t, b), "scenario", "runs")
	for _, r := range raw.Runs {
		hasAll(t, "eos run", keys(t, r), "mode", "commit_interval_ms", "msgs_per_s", "p50_latency_ms", "p99_latency_ms", "lost", "duplicates")
	}
	var r EOSResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		mode string
		ms   float64
	}{{"at-least-once", 5000}, {"exactly-once", 100}, {"exactly-once", 1000}}
	if r.Scenario != "eos" || len(r.Runs) != len(want) {
		t.Fatalf("eos.json: scenario %q, %d runs", r.Scenario, len(r.Runs))
	}
	for i, w := range want {
		run := r.Runs[i]
		if run.Mode != w.mode || run.CommitIntervalMs != w.ms {
			t.Errorf("run %d: %s at %v ms, want %s at %v ms", i, run.Mode, run.CommitIntervalMs, w.mode, w.ms)
		}
		if run.Lost != 0 || run.Duplicates != 0 || run.Inputs < 3000+500 || run.MsgsPerS <= 0 || run.DrainMsgsPerS <= 0 || run.P50LatencyMs <= 0 || run.P99LatencyMs < run.P50LatencyMs {
			t.Errorf("run %d (%s %v ms): inputs %d lost %d duplicates %d, %.0f msg/s, latency p50 %.0f p99 %.0f ms",
				i, run.Mode, run.CommitIntervalMs, run.Inputs, run.Lost, run.Duplicates, run.MsgsPerS, run.P50LatencyMs, run.P99LatencyMs)
		}
		if (run.TxnCommits > 0) != (w.mode == "exactly-once") {
			t.Errorf("run %d (%s): %d transactions", i, run.Mode, run.TxnCommits)
		}
	}
}

// TestEOSAccount: the reader's accounting of lost and duplicated inputs, and the merge of rounds.
func TestEOSAccount(t *testing.T) {
	s := eosSeen{counts: map[int32][]uint16{0: {1, 2, 0, 1}, 1: {1}}}
	if lost, dups := s.account([]int64{5, 2}); lost != 3 || dups != 1 { // 0/2, 0/4 and 1/1 missing; 0/1 twice
		t.Fatalf("lost %d duplicates %d, want 3 and 1", lost, dups)
	}
	alo := []EOSRun{{Mode: "at-least-once", MsgsPerS: 100}, {MsgsPerS: 200}, {MsgsPerS: 300}}
	eos := []EOSRun{{Mode: "exactly-once", MsgsPerS: 90, Duplicates: 1}, {MsgsPerS: 100}, {MsgsPerS: 240, Lost: 2}}
	m := mergeEOSRounds(eos, alo)
	if m.Mode != "exactly-once" || m.MsgsPerS != 100 || m.Ratio != 0.8 || m.Lost != 2 || m.Duplicates != 1 || len(m.Rounds) != 3 {
		t.Fatalf("merged %+v", m)
	}
	if p := percentile([]float64{5, 1, 4, 2, 3}, 0.5); p != 3 {
		t.Fatalf("p50 = %v", p)
	}
	if _, err := parseEOSModes("exactly-once:0s", time.Second); err == nil {
		t.Fatal("a zero commit interval parsed")
	}
}

// TestEOSSustainedRate: the slope over the middle of the receipts ignores a slow start and a
// late tail, and a staircase of bursts (one per commit) gives its average rate.
func TestEOSSustainedRate(t *testing.T) {
	var s eosSeen
	for i := range 100 { // a slow start: 100 records over 10 s
		s.backlogRecv = append(s.backlogRecv, float64(i)/10)
	}
	for i := range 800 { // 1000/s from 10 s on
		s.backlogRecv = append(s.backlogRecv, 10+float64(i)/1000)
	}
	for i := range 100 { // a tail: the last 100 a second later
		s.backlogRecv = append(s.backlogRecv, 11.8+float64(i)/1e5)
	}
	if r := s.sustainedRate(0.1, 0.9); math.Abs(r-1000) > 1 {
		t.Fatalf("rate %v, want 1000", r)
	}
	s.backlogRecv = nil
	for step := range 20 { // 1000 records per second, received in one burst per second
		for i := range 1000 {
			s.backlogRecv = append(s.backlogRecv, float64(step)+float64(i)/1e6)
		}
	}
	if r := s.sustainedRate(0.1, 0.9); math.Abs(r-1000) > 100 {
		t.Fatalf("staircase rate %v, want about 1000", r)
	}
}
