package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/kafka"
)

// eos: the cost of exactly-once. One copy pipeline (the copy worker, eos_worker.go: source →
// copy → producer sink, 1 KiB records, 8 partitions) in three runs: at-least-once, and
// exactly-once with a transaction every 100 ms and every 1 s. Each run gets a fresh broker
// process and two phases, both read by one read_committed reader of the output (eos_reader.go):
//
//   - throughput: the input topic is pre-filled with --records records before the worker starts;
//     msgs_per_s is the sustained rate at which the reader receives their outputs (the slope
//     from the 10th to the 90th percentile of the receipts: no group join, no last commit),
//     drain_msgs_per_s their count over the time from the worker's first copy to the receipt
//     of the last of their outputs (the last transaction's commit included);
//   - latency: then --duration of input paced at --rate (below every mode's capacity), and
//     p50/p99 of the time from each input record's timestamp to the reader's receipt of its
//     output. The backlog's latencies are reported apart (backlog_*): they are mostly the time
//     a record waited in the topic behind the others, not the pipeline's.
//
// lost and duplicates compare every input offset (both phases) with the outputs the reader saw.

type eosOpts struct {
	brokers, out, profile string
	records               int64
	duration              time.Duration
	rate                  float64
	size, partitions      int
	budget                int64
	aloInterval           time.Duration
	timeout               time.Duration
	rounds                int
	pin                   bool
	runs                  []eosMode
}

// eosMode is one run: at-least-once or exactly-once, with its commit interval.
type eosMode struct {
	exactlyOnce bool
	interval    time.Duration
}

func (m eosMode) name() string {
	if m.exactlyOnce {
		return "exactly-once"
	}
	return "at-least-once"
}

// parseEOSModes parses "at-least-once,exactly-once:100ms,exactly-once:1s"; an at-least-once
// run without an interval gets alo.
func parseEOSModes(s string, alo time.Duration) ([]eosMode, error) {
	var out []eosMode
	for _, f := range strings.Split(s, ",") {
		name, iv, hasIv := strings.Cut(strings.TrimSpace(f), ":")
		m := eosMode{exactlyOnce: name == "exactly-once", interval: alo}
		if !m.exactlyOnce && name != "at-least-once" {
			return nil, fmt.Errorf("eos: bad run %q (at-least-once[:D] or exactly-once:D)", f)
		}
		if hasIv {
			d, err := time.ParseDuration(iv)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("eos: bad commit interval in %q", f)
			}
			m.interval = d
		} else if m.exactlyOnce {
			m.interval = kafka.DefaultTxnCommitInterval
		}
		out = append(out, m)
	}
	return out, nil
}

func runEOS(args []string) error {
	var o eosOpts
	fs := flag.NewFlagSet("eos", flag.ContinueOnError)
	fs.StringVar(&o.brokers, "brokers", "", "bootstrap servers (default: embedded kfakebroker process, a fresh one per run)")
	fs.StringVar(&o.out, "out", "bench/results", "output directory")
	fs.Int64Var(&o.records, "records", 300000, "records pre-filled into the input topic (the throughput phase)")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "length of the paced input (the latency phase), per run")
	fs.Float64Var(&o.rate, "rate", 1000, "the latency phase's input messages per second (below every mode's capacity)")
	fs.IntVar(&o.size, "size", 1024, "message bytes")
	fs.IntVar(&o.partitions, "partitions", 8, "partitions of the input and output topics")
	fs.Int64Var(&o.budget, "budget", 64<<20, "the worker's budget bytes")
	fs.DurationVar(&o.aloInterval, "alo-commit-interval", kafka.DefaultCommitInterval, "the at-least-once run's CommitInterval")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "cap of each wait for the reader to see a phase's outputs")
	fs.BoolVar(&o.pin, "pin", true, "pin the worker to CPU 0 with GOMAXPROCS=1, away from the broker process")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every mode once, round r starting with the r-th (figures: medians, ratios per round)")
	fs.StringVar(&o.profile, "profile", "", "write each worker's CPU profile into this directory")
	runs := fs.String("runs", "at-least-once,exactly-once:100ms,exactly-once:1s", "the runs, in order")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if o.runs, err = parseEOSModes(*runs, o.aloInterval); err != nil {
		return err
	}
	if o.rounds < 1 {
		return fmt.Errorf("eos: --rounds must be at least 1")
	}
	res := EOSResult{Scenario: "eos", Records: o.records, Duration: o.duration.Seconds(), LatencyRate: o.rate,
		MessageBytes: o.size, Partitions: o.partitions, BudgetBytes: o.budget, RoundsN: o.rounds}
	// Each round runs every mode once, so a slow stretch of the machine (other processes on
	// its CPUs) hits the modes of a round alike: ratios are taken per round. Round r starts
	// with mode r (mod the modes), so no mode always runs first or last.
	perMode := make([][]EOSRun, len(o.runs))
	for round := range o.rounds {
		for k := range o.runs {
			i := (round + k) % len(o.runs)
			m := o.runs[i]
			r, err := eosRun(o, m, i)
			endProgress()
			if err != nil {
				return fmt.Errorf("eos %s %v (round %d): %w", m.name(), m.interval, round+1, err)
			}
			fmt.Fprintf(os.Stderr, "eos round %d %-13s %6v: %.0f msg/s (drain %.0f); latency p50 %.0f ms p99 %.0f ms (backlog p50 %.0f ms); lost %d, duplicates %d; %d transactions, %d aborted; %d stalls, %.1fs; CPU µs/msg worker %.1f broker %.1f\n",
				round+1, r.Mode, m.interval, r.MsgsPerS, r.DrainMsgsPerS, r.P50LatencyMs, r.P99LatencyMs, r.BacklogP50LatencyMs, r.Lost, r.Duplicates, r.TxnCommits, r.TxnAborts, r.Stalls, r.StalledS, r.WorkerCPUUsPerMsg, r.BrokerCPUUsPerMsg)
			perMode[i] = append(perMode[i], r)
		}
	}
	for i := range o.runs {
		res.Runs = append(res.Runs, mergeEOSRounds(perMode[i], perMode[0]))
	}
	p, err := writeJSON(o.out, "eos", res)
	if err != nil {
		return err
	}
	if err := plotEOS(res, filepath.Join(o.out, "eos.svg")); err != nil {
		return err
	}
	for _, r := range res.Runs {
		fmt.Fprintf(os.Stderr, "eos %-13s %5.0f ms: %.0f msg/s (rounds %.0f), %.2f× the first run's; latency p50 %.0f ms p99 %.0f ms; lost %d, duplicates %d\n",
			r.Mode, r.CommitIntervalMs, r.MsgsPerS, r.Rounds, r.Ratio, r.P50LatencyMs, r.P99LatencyMs, r.Lost, r.Duplicates)
	}
	fmt.Fprintln(os.Stderr, "wrote", p, "and eos.svg")
	return nil
}

// eosRun runs one mode: a fresh broker, the pre-filled backlog, the worker, the paced input.
func eosRun(o eosOpts, m eosMode, i int) (EOSRun, error) {
	run := EOSRun{Mode: m.name(), CommitIntervalMs: float64(m.interval) / float64(time.Millisecond)}
	label := fmt.Sprintf("eos %s %v", m.name(), m.interval)
	name := fmt.Sprintf("eos%d-%d", i, time.Now().UnixNano())
	in, out := name+"-in", name+"-out"
	br, err := startBroker(o.brokers, 0, fmt.Sprintf("%s:%d", in, o.partitions), fmt.Sprintf("%s:%d", out, o.partitions))
	if err != nil {
		return run, err
	}
	defer br.stop()
	if err := prefill(br.addr, in, o.size, int(o.records)); err != nil {
		return run, err
	}
	backlog, err := highWatermarks(br.addr, in, o.partitions)
	if err != nil {
		return run, err
	}
	rd, err := startEOSReader(br.addr, out, o.partitions, backlog)
	if err != nil {
		return run, err
	}
	defer rd.stop()
	args := []string{"copy", "--brokers", br.addr, "--topic", in, "--out-topic", out, "--group", name + "-g",
		"--budget", fmt.Sprint(o.budget), "--commit-interval", m.interval.String(), "--backlog", fmt.Sprint(o.records)}
	if m.exactlyOnce {
		args = append(args, "--exactly-once", "--transactional-id", name+"-txn")
	}
	if o.profile != "" {
		args = append(args, "--cpuprofile", filepath.Join(o.profile, fmt.Sprintf("%s-%s-%v.pprof", name, m.name(), m.interval)))
	}
	brokerCPU0 := br.cpu()
	w, err := startChild(o.pin, args...)
	if err != nil {
		return run, err
	}
	defer func() { // whatever happened, the worker does not outlive the run
		select {
		case <-w.done:
		default:
			w.kill()
		}
	}()
	var shown time.Time
	progress := func(phase string) func() {
		return func() {
			if time.Since(shown) < time.Second {
				return
			}
			shown = time.Now()
			s := rd.snapshot()
			progressLine("[%s] %s: %d of the backlog's %d received, %d in all", label, phase, s.backlogDistinct, o.records, s.distinct)
		}
	}
	if err := waitFor(w, o.timeout, progress("backlog"), func() bool { return rd.snapshot().backlogDistinct >= o.records }); err != nil {
		if !errors.Is(err, errNotYet) {
			return run, fmt.Errorf("backlog: %w", err)
		}
		fmt.Fprintf(os.Stderr, "\n%s: backlog: %v: going on (lost counts what never came)\n", label, err)
	}
	if c, err := procCPU(w.pid()); err == nil {
		run.WorkerCPUUsPerMsg = c.Seconds() * 1e6 / float64(o.records)
	}
	if c := br.cpu(); c > 0 {
		run.BrokerCPUUsPerMsg = (c - brokerCPU0).Seconds() * 1e6 / float64(o.records)
	}
	paced, err := produce(br.addr, in, o.rate, o.size, 0, o.duration)
	if err != nil {
		return run, fmt.Errorf("paced input: %w", err)
	}
	run.PacedRecords = paced
	final, err := highWatermarks(br.addr, in, o.partitions)
	if err != nil {
		return run, err
	}
	var total int64
	for _, h := range final {
		total += h
	}
	if err := waitFor(w, o.timeout, progress("paced"), func() bool { return rd.snapshot().distinct >= total }); err != nil {
		if !errors.Is(err, errNotYet) {
			return run, fmt.Errorf("paced: %w", err)
		}
		fmt.Fprintf(os.Stderr, "\n%s: paced: %v: going on (lost counts what never came)\n", label, err)
	}
	w.stop(90 * time.Second)
	wr, err := w.result()
	if err != nil {
		return run, err
	}
	rd.settle(time.Second, 15*time.Second) // what the worker's final commit made visible
	s := rd.stop()
	if s.malformed > 0 {
		return run, fmt.Errorf("%d outputs without the copy worker's headers", s.malformed)
	}
	run.Inputs = total
	run.Lost, run.Duplicates = s.account(final)
	run.TxnCommits, run.TxnAborts = wr.TxnCommits, wr.TxnAborts
	run.Stalls, run.StalledS = wr.Stalls, float64(wr.StalledNs)/1e9
	if wr.FirstUnixNs > 0 && s.backlogDone.UnixNano() > wr.FirstUnixNs {
		run.BacklogSeconds = float64(s.backlogDone.UnixNano()-wr.FirstUnixNs) / 1e9
		run.DrainMsgsPerS = float64(o.records) / run.BacklogSeconds
	}
	run.MsgsPerS = s.sustainedRate(0.1, 0.9)
	run.P50LatencyMs, run.P99LatencyMs = percentile(s.pacedLat, 0.50), percentile(s.pacedLat, 0.99)
	run.BacklogP50LatencyMs, run.BacklogP99LatencyMs = percentile(s.backlogLat, 0.50), percentile(s.backlogLat, 0.99)
	run.Rounds = []float64{run.MsgsPerS}
	return run, nil
}

// mergeEOSRounds merges one mode's rounds: medians of the rates, latencies and times, sums of
// the counts, and the median of each round's rate over the same round of first (the first mode).
func mergeEOSRounds(rs, first []EOSRun) EOSRun {
	m := EOSRun{Mode: rs[0].Mode, CommitIntervalMs: rs[0].CommitIntervalMs}
	pick := func(f func(r EOSRun) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		return median(v)
	}
	m.MsgsPerS = pick(func(r EOSRun) float64 { return r.MsgsPerS })
	m.P50LatencyMs = pick(func(r EOSRun) float64 { return r.P50LatencyMs })
	m.P99LatencyMs = pick(func(r EOSRun) float64 { return r.P99LatencyMs })
	m.BacklogP50LatencyMs = pick(func(r EOSRun) float64 { return r.BacklogP50LatencyMs })
	m.BacklogP99LatencyMs = pick(func(r EOSRun) float64 { return r.BacklogP99LatencyMs })
	m.BacklogSeconds = pick(func(r EOSRun) float64 { return r.BacklogSeconds })
	m.DrainMsgsPerS = pick(func(r EOSRun) float64 { return r.DrainMsgsPerS })
	m.WorkerCPUUsPerMsg = pick(func(r EOSRun) float64 { return r.WorkerCPUUsPerMsg })
	m.BrokerCPUUsPerMsg = pick(func(r EOSRun) float64 { return r.BrokerCPUUsPerMsg })
	var ratios []float64
	for i, r := range rs {
		m.Lost += r.Lost
		m.Duplicates += r.Duplicates
		m.Inputs += r.Inputs
		m.PacedRecords += r.PacedRecords
		m.TxnCommits += r.TxnCommits
		m.TxnAborts += r.TxnAborts
		m.Stalls += r.Stalls
		m.StalledS += r.StalledS
		m.Rounds = append(m.Rounds, r.MsgsPerS)
		if i < len(first) && first[i].MsgsPerS > 0 {
			ratios = append(ratios, r.MsgsPerS/first[i].MsgsPerS)
		}
	}
	m.Ratio = median(ratios)
	return m
}

// errNotYet is waitFor's error when its timeout passed.
var errNotYet = errors.New("the reader has not received every output")

// waitFor polls cond every 100 ms (calling tick first) until it holds, the worker exits, or
// timeout passes (errNotYet).
func waitFor(w *child, timeout time.Duration, tick func(), cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		tick()
		if cond() {
			return nil
		}
		select {
		case <-w.done:
			_, err := w.result()
			return errors.Join(errors.New("the worker exited"), err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %v", errNotYet, timeout)
		}
	}
}

// percentile returns the q-quantile of v (nearest rank), 0 for none. It sorts v.
func percentile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	i := int(q*float64(len(v)) + 0.5)
	return v[min(max(i-1, 0), len(v)-1)]
}

// procCPU returns the user + system CPU time of pid so far (/proc/<pid>/stat, in clock ticks
// of 10 ms: USER_HZ is 100 on Linux).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	_, rest, ok := strings.Cut(string(b), ") ") // the command name may hold spaces
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	var ut, st int64
	if _, err := fmt.Sscan(f[11], &ut); err != nil {
		return 0, err
	}
	if _, err := fmt.Sscan(f[12], &st); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// cpu is the embedded broker process's CPU time so far (0 for an external broker).
func (b *brokerHandle) cpu() time.Duration {
	if b.proc == nil {
		return 0
	}
	c, _ := procCPU(b.proc.Pid())
	return c
}

// highWatermarks returns topic's high watermark per partition.
func highWatermarks(addr, topic string, parts int) ([]int64, error) {
	c, err := watermarkClient(addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := make([]int64, parts)
	for p := range parts {
		_, hi, err := c.QueryWatermarkOffsets(topic, int32(p), 15000)
		if err != nil {
			return nil, fmt.Errorf("watermarks of %s/%d: %w", topic, p, err)
		}
		out[p] = hi
	}
	return out, nil
}
