package main

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// Sample is one RSS (and progress) sample of a measured process.
type Sample struct {
	T         float64 `json:"t_s"`
	RSS       int64   `json:"rss_bytes"`
	Processed int64   `json:"processed"`
}

// SeedRun is one consumer run of the seed scenario.
type SeedRun struct {
	Name           string   `json:"name"`
	BudgetBytes    int64    `json:"budget_bytes"`
	PeakRSS        int64    `json:"peak_rss_bytes"`
	RSSSlope       float64  `json:"rss_slope_bytes_per_s"`
	Processed      int64    `json:"processed"`
	Throughput     float64  `json:"throughput_per_s"`
	Lost           int64    `json:"lost"`
	Duplicates     int64    `json:"duplicates"`
	FinalLag       int64    `json:"final_lag"`
	Committed      int64    `json:"committed"`
	Produced       int64    `json:"produced"`
	KilledByRSSCap bool     `json:"killed_by_rss_cap"`
	RunSeconds     float64  `json:"run_s"`
	Samples        []Sample `json:"samples"`
}

// loadHeader is what seed.json, peers.json and scale.json say first: the scenario and the
// seed load it ran (its fields appear at the top level of the JSON).
type loadHeader struct {
	Scenario         string  `json:"scenario"`
	Duration         float64 `json:"duration_s"`
	InputRate        float64 `json:"input_rate"`
	MessageBytes     int     `json:"message_bytes"`
	SinkCapacityPerS float64 `json:"sink_capacity_per_s"`
	Partitions       int     `json:"partitions"`
}

// header returns the load header of scenario, whose downstream takes capacity records/s.
func (o seedOpts) header(scenario string, capacity float64) loadHeader {
	return loadHeader{Scenario: scenario, Duration: o.duration.Seconds(), InputRate: o.rate,
		MessageBytes: o.size, SinkCapacityPerS: capacity, Partitions: o.partitions}
}

// SeedResult is seed.json.
type SeedResult struct {
	loadHeader
	RSSCapBytes int64 `json:"rss_cap_bytes"`
	// Downstream is "sleep" (a sink of slots × sleep) or "kafka" (a producer to an output
	// topic the broker takes at SinkCapacityPerS records/s) (absent in results written before it existed).
	Downstream string    `json:"downstream"`
	Runs       []SeedRun `json:"runs"`
}

// E2ERow is one message size of e2e.json.
type E2ERow struct {
	MessageBytes int       `json:"message_bytes"`
	BareMsgsPerS float64   `json:"bare_msgs_per_s"`
	SluiceMsgsPS float64   `json:"sluice_msgs_per_s"`
	Ratio        float64   `json:"ratio"`
	BareMBPerS   float64   `json:"bare_mb_per_s"`
	SluiceMBPerS float64   `json:"sluice_mb_per_s"`
	Messages     int64     `json:"messages"`
	BareRounds   []float64 `json:"bare_rounds_msgs_per_s"`
	SluiceRounds []float64 `json:"sluice_rounds_msgs_per_s"`
	RoundRatios  []float64 `json:"round_ratios"` // sluice / bare, per round; Ratio is their median
	// Process CPU time per message (every thread, Go and librdkafka), median over the rounds:
	// steadier than the rates, which also count time spent waiting for the broker.
	BareCPUNsPerMsg   float64 `json:"bare_cpu_ns_per_msg"`
	SluiceCPUNsPerMsg float64 `json:"sluice_cpu_ns_per_msg"`
}

// E2EResult is e2e.json.
type E2EResult struct {
	Scenario string   `json:"scenario"`
	Results  []E2ERow `json:"results"`
}

// SweepRow is one point of sweep.json.
type SweepRow struct {
	MessageBytes int     `json:"message_bytes"`
	BudgetBytes  int64   `json:"budget_bytes"`
	MsgsPerS     float64 `json:"msgs_per_s"`
	PeakRSS      int64   `json:"peak_rss_bytes"`
	MBPerS       float64 `json:"mb_per_s"`
	Messages     int64   `json:"messages"`
}

// SweepResult is sweep.json.
type SweepResult struct {
	Scenario string     `json:"scenario"`
	Results  []SweepRow `json:"results"`
}

// EOSRun is one mode of eos.json. Throughput is the pre-filled backlog's; the latencies are
// the paced phase's (LatencyRate, below capacity), where they are not queueing time.
type EOSRun struct {
	Mode             string  `json:"mode"` // "at-least-once" | "exactly-once"
	CommitIntervalMs float64 `json:"commit_interval_ms"`
	// MsgsPerS: the sustained rate at which the read_committed reader received the backlog's
	// outputs (least-squares slope over the 10th to 90th percentile of their receipts);
	// DrainMsgsPerS: the backlog's records over the time from the worker's first copy to the
	// reader's receipt of the backlog's last output (start-up and the last commit included).
	MsgsPerS      float64 `json:"msgs_per_s"`
	DrainMsgsPerS float64 `json:"drain_msgs_per_s"`
	// Latency from the input record's timestamp to the reader's receipt of its output, over
	// the paced phase's records (first receipt).
	P50LatencyMs float64 `json:"p50_latency_ms"`
	P99LatencyMs float64 `json:"p99_latency_ms"`
	// The same over the backlog's records: mostly the time each waited in the topic.
	BacklogP50LatencyMs float64 `json:"backlog_p50_latency_ms"`
	BacklogP99LatencyMs float64 `json:"backlog_p99_latency_ms"`
	Lost                int64   `json:"lost"`       // inputs whose output the reader never saw
	Duplicates          int64   `json:"duplicates"` // receipts beyond the first, over all inputs
	Inputs              int64   `json:"inputs"`     // backlog + paced records
	PacedRecords        int64   `json:"paced_records"`
	BacklogSeconds      float64 `json:"backlog_s"`
	TxnCommits          uint64  `json:"txn_commits"`
	TxnAborts           uint64  `json:"txn_aborts"`
	// Stalls: gaps of over 20 ms between two copies in the worker (a barrier's drain and
	// commit, a paused partition, a CPU taken by another process), and their total.
	Stalls   int64   `json:"stalls"`
	StalledS float64 `json:"stalled_s"`
	// CPU time per backlog record, from the worker's start to the reader's receipt of the
	// backlog's last output: the worker's (Go and librdkafka threads) and the embedded broker's.
	WorkerCPUUsPerMsg float64 `json:"worker_cpu_us_per_msg"`
	BrokerCPUUsPerMsg float64 `json:"broker_cpu_us_per_msg"`
	// With --rounds > 1: the figures above are medians over the rounds (lost, duplicates,
	// inputs and the counters are sums), Rounds each round's msgs_per_s, and Ratio the median
	// of each round's msgs_per_s over the same round's first run (at-least-once).
	Rounds []float64 `json:"rounds_msgs_per_s"`
	Ratio  float64   `json:"ratio_to_first"`
}

// EOSResult is eos.json.
type EOSResult struct {
	Scenario     string   `json:"scenario"`
	Records      int64    `json:"records"`            // the pre-filled backlog, per run
	Duration     float64  `json:"duration_s"`         // the paced phase, per run
	LatencyRate  float64  `json:"latency_rate_per_s"` // the paced phase's input rate
	MessageBytes int      `json:"message_bytes"`
	Partitions   int      `json:"partitions"`
	BudgetBytes  int64    `json:"budget_bytes"`
	RoundsN      int      `json:"rounds"` // each round runs every mode once, in order
	Runs         []EOSRun `json:"runs"`
}

func writeJSON(dir, scenario string, v any) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, scenario+".json")
	return p, os.WriteFile(p, append(b, '\n'), 0o644)
}
