package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/kafka"
)

type seedOpts struct {
	brokers    string
	duration   time.Duration
	out        string
	rate       float64
	size       int
	partitions int
	budget     int64
	rssCap     int64
	slots      int
	sleep      time.Duration
	trim       time.Duration
	runs       string
	capacity   int
	workerExe  string  // the worker program (empty: this bench binary); bench peers sets it per run
	sluiceBin  string  // own: the sluice run is bench/seedworker, a binary of its own; bench: this one
	downstream string  // sleep | kafka
	outputRate float64 // kafka: records/s the output topic takes
}

func runSeed(args []string) error {
	var o seedOpts
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	fs.StringVar(&o.brokers, "brokers", "", "bootstrap servers (default: embedded kfakebroker process)")
	fs.DurationVar(&o.duration, "duration", 120*time.Second, "length of each consumer run")
	fs.StringVar(&o.out, "out", "bench/results", "output directory")
	fs.Float64Var(&o.rate, "rate", 980, "input messages per second")
	fs.IntVar(&o.size, "size", 40<<10, "message bytes")
	fs.IntVar(&o.partitions, "partitions", 8, "topic partitions")
	fs.Int64Var(&o.budget, "budget", 0, "sluice budget bytes (0: none given, the library's default configuration)")
	fs.Int64Var(&o.rssCap, "rss-cap", 3<<30, "kill a run whose RSS exceeds this")
	fs.IntVar(&o.slots, "slots", 10, "sink concurrency")
	fs.DurationVar(&o.sleep, "sleep", 20*time.Millisecond, "sink time per message")
	fs.DurationVar(&o.trim, "trim-interval", 0, "kfakebroker --trim-interval (0: off; trimming to the high watermark deletes unread records)")
	fs.IntVar(&o.capacity, "sink-capacity", 0, "sluice sink input edge capacity (0: stage default)")
	fs.StringVar(&o.runs, "runs", "naive,sluice", "runs, in order")
	fs.StringVar(&o.sluiceBin, "sluice-binary", "own", "own: run sluice as bench/seedworker, a binary with only sluice and its client, as a service is built; bench: in this bench binary")
	fs.StringVar(&o.downstream, "downstream", "sleep", "sleep: a sink of --slots × --sleep; kafka: a producer to an output topic the embedded broker takes at --output-rate")
	fs.Float64Var(&o.outputRate, "output-rate", 500, "kafka downstream: records/s the output topic takes (kfakebroker --produce-rate)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	capacity := float64(o.slots) / o.sleep.Seconds()
	switch o.downstream {
	case "sleep":
	case "kafka":
		capacity = o.outputRate
	default:
		return fmt.Errorf("seed: --downstream %q: want sleep or kafka", o.downstream)
	}
	sluiceExe, err := seedWorker(o.sluiceBin, o.runs)
	if err != nil {
		return err
	}
	if sluiceExe != "" {
		defer os.RemoveAll(filepath.Dir(sluiceExe))
	}
	res := SeedResult{loadHeader: o.header("seed", capacity), RSSCapBytes: o.rssCap, Downstream: o.downstream}
	for _, name := range strings.Split(o.runs, ",") {
		ro := o
		if name == "sluice" {
			ro.workerExe = sluiceExe
		}
		r, err := seedRun(ro, name)
		endProgress()
		if err != nil {
			return fmt.Errorf("seed %s: %w", name, err)
		}
		fmt.Fprintf(os.Stderr, "seed %-6s peak RSS %.0f MiB, slope %.2f MiB/s, processed %d (%.1f/s), lost %d, duplicates %d, final lag %d, killed=%v\n",
			r.Name, mib(r.PeakRSS), r.RSSSlope/(1<<20), r.Processed, r.Throughput, r.Lost, r.Duplicates, r.FinalLag, r.KilledByRSSCap)
		res.Runs = append(res.Runs, r)
	}
	name := "seed" // the kafka downstream writes seed-kafka.json and seed-kafka.svg beside seed's
	if o.downstream == "kafka" {
		name = "seed-kafka"
	}
	p, err := writeJSON(o.out, name, res)
	if err != nil {
		return err
	}
	if err := plotSeed(res, filepath.Join(o.out, name+".svg")); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", p, "and", name+".svg")
	return nil
}

// newSeedRun returns the run's result before it runs: its name and, for sluice, its budget.
func newSeedRun(o seedOpts, name string) SeedRun {
	run := SeedRun{Name: name}
	if name == "sluice" {
		run.BudgetBytes = o.budget
		if o.budget == 0 {
			run.BudgetBytes = kafka.DefaultBudget // none given: the default is the cap
		}
	}
	return run
}

func seedRun(o seedOpts, name string) (SeedRun, error) {
	if o.downstream == "kafka" {
		return seedKafkaRun(o, name)
	}
	run := newSeedRun(o, name)
	topic := fmt.Sprintf("seed-%s-%d", name, time.Now().UnixNano())
	group := topic + "-g"
	// A fresh broker per run: each run starts from the same empty state.
	br, err := startBroker(o.brokers, o.trim, fmt.Sprintf("%s:%d", topic, o.partitions))
	if err != nil {
		return run, err
	}
	defer br.stop()
	dir, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return run, err
	}
	defer os.RemoveAll(dir)
	sinkPath := filepath.Join(dir, "sunk.bin")
	mode := name
	w, err := startProgram(o.workerExe, true, "worker", "--mode", mode, "--brokers", br.addr, "--topic", topic, "--group", group,
		"--budget", fmt.Sprint(o.budget), "--capacity", fmt.Sprint(o.capacity), "--slots", fmt.Sprint(o.slots), "--sleep", o.sleep.String(), "--sink-file", sinkPath)
	if err != nil {
		return run, err
	}
	prod, err := startChild(false, "produce", "--brokers", br.addr, "--topic", topic, "--rate", fmt.Sprint(o.rate),
		"--size", fmt.Sprint(o.size), "--duration", o.duration.String())
	if err != nil {
		w.kill()
		return run, err
	}
	progress := func() int64 {
		st, err := os.Stat(sinkPath)
		if err != nil {
			return 0
		}
		return st.Size() / 12
	}
	if _, err := measureRun(o, &run, w, prod, progress, fmt.Sprintf("[seed %s]", name), "processed"); err != nil {
		return run, err
	}
	committed, hwm, err := offsets(br.addr, group, topic, o.partitions)
	if err != nil {
		return run, err
	}
	sunk, total, err := readSinkLog(sinkPath)
	if err != nil {
		return run, err
	}
	run.Processed = total
	run.Throughput = float64(total) / run.RunSeconds
	account(&run, committed, hwm, sunk)
	return run, nil
}

// measureRun samples w's RSS and progress until w exits or o.duration passes (killing w, as
// the container's OOM killer would, above o.rssCap), then stops w and waits for the producer.
// It sets run's samples, run time, cap flag and produced count, and returns progress read at the
// end of the window (before w's drain). label and what name the progress line's run and count.
func measureRun(o seedOpts, run *SeedRun, w, prod *child, progress func() int64, label, what string) (int64, error) {
	var over atomic.Bool
	start := time.Now()
	s := StartSampler(w.pid(), 500*time.Millisecond, progress, func(sm Sample) {
		progressLine("%s %4.0fs/%.0fs  RSS %7.1f MiB  %s %7d", label, sm.T, o.duration.Seconds(), mib(sm.RSS), what, sm.Processed)
		if sm.RSS > o.rssCap && over.CompareAndSwap(false, true) {
			w.kill()
		}
	})
	select {
	case <-w.done:
	case <-time.After(o.duration):
	}
	run.Samples = s.Stop()
	run.RunSeconds = time.Since(start).Seconds()
	inWindow := progress()
	run.KilledByRSSCap = over.Load()
	w.stop(60 * time.Second)
	if _, err := w.result(); err != nil && !run.KilledByRSSCap {
		return inWindow, err
	}
	select { // the producer stops on its own at duration
	case <-prod.done:
	case <-time.After(30 * time.Second):
		prod.stop(10 * time.Second)
	}
	if pr, err := prod.result(); err == nil {
		run.Produced = pr.Produced
	}
	return inWindow, nil
}

// account sets run's committed, final lag, lost (committed offsets never sunk) and duplicates
// (offsets sunk more than once) from the input's committed offsets and high watermarks per
// partition and what the sink received, and its peak RSS and slope from its samples.
func account(run *SeedRun, committed, hwm []int64, sunk map[int32]map[int64]int) {
	for p := range committed {
		c := max(committed[p], 0) // no commit: nothing below it
		run.Committed += c
		run.FinalLag += hwm[p] - c
		for off := int64(0); off < c; off++ {
			if sunk[int32(p)][off] == 0 {
				run.Lost++
			}
		}
	}
	for _, offs := range sunk {
		for _, n := range offs {
			run.Duplicates += int64(n - 1)
		}
	}
	run.PeakRSS = peakRSS(run.Samples)
	run.RSSSlope = rssSlopeSecondHalf(run.Samples)
}
