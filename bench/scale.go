package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// scale: the seed load against 1, 2 and 3 sluice worker processes of one consumer group, and
// (--rolling) a three-process static group restarted one process at a time while the load runs.
// Every run gets a fresh broker process (kfake keeps every record; trimming to the high
// watermark would delete records a lagging group has not read, see README).

type scaleOpts struct {
	seedOpts
	replicas     []int
	rolling      bool
	restartDelay time.Duration
}

func runScale(args []string) error {
	var o scaleOpts
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.StringVar(&o.brokers, "brokers", "", "bootstrap servers (default: embedded kfakebroker process)")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "length of each run")
	fs.StringVar(&o.out, "out", "bench/results", "output directory")
	fs.Float64Var(&o.rate, "rate", 980, "input messages per second")
	fs.IntVar(&o.size, "size", 40<<10, "message bytes")
	fs.IntVar(&o.partitions, "partitions", 8, "topic partitions")
	fs.Int64Var(&o.budget, "budget", 64<<20, "sluice budget bytes, per process")
	fs.IntVar(&o.slots, "slots", 10, "sink concurrency, per process")
	fs.DurationVar(&o.sleep, "sleep", 20*time.Millisecond, "sink time per message")
	fs.BoolVar(&o.rolling, "rolling", false, "add a run restarting a three-process static group one process at a time")
	fs.DurationVar(&o.restartDelay, "restart-delay", 3*time.Second, "--rolling: time between a process's exit and its replacement's start (a pod's restart)")
	reps := fs.String("replicas", "1,2,3", "process counts, one run each, in order")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(*reps, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n < 1 {
			return fmt.Errorf("scale: bad --replicas %q", *reps)
		}
		o.replicas = append(o.replicas, n)
	}
	res := ScaleResult{loadHeader: o.header("scale", float64(o.slots)/o.sleep.Seconds()), BudgetBytes: o.budget}
	for _, n := range o.replicas {
		r, err := scaleRun(o, n, nil)
		endProgress()
		if err != nil {
			return fmt.Errorf("scale %d: %w", n, err)
		}
		fmt.Fprintf(os.Stderr, "scale %d: %.1f msg/s, lag slope %+.1f/s, peak RSS %.0f MiB, lost %d, duplicates %d\n",
			n, r.Throughput, r.LagSlope, mib(r.PeakRSSMax), r.Lost, r.Duplicates)
		res.Runs = append(res.Runs, r)
	}
	if o.rolling {
		rr := &RollingRun{RestartDelayS: o.restartDelay.Seconds()}
		r, err := scaleRun(o, 3, rr)
		endProgress()
		if err != nil {
			return fmt.Errorf("scale rolling: %w", err)
		}
		rr.ScaleRun = r
		fmt.Fprintf(os.Stderr, "scale rolling: %d restarts, %d rebalances, %d partitions moved, lost %d, duplicates %d, skipped finished %d\n",
			rr.Restarts, rr.Rebalances, rr.PartitionsMoved, rr.Lost, rr.Duplicates, rr.SkippedFinished)
		res.Rolling = rr
	}
	p, err := writeJSON(o.out, "scale", res)
	if err != nil {
		return err
	}
	if err := plotScale(res, filepath.Join(o.out, "scale.svg")); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", p, "and scale.svg")
	return nil
}

// incarnation is one worker process of a slot; a slot is one group member (one instance id
// with --rolling), restarted as a new incarnation.
type incarnation struct {
	c           *child
	sink, stats string
	initial     bool
	settleOff   int64 // sink log bytes written before the group settled (--rolling)
}

type slot struct {
	id   string
	incs []*incarnation
}

func (s *slot) cur() *incarnation { return s.incs[len(s.incs)-1] }

// scaleRun runs replicas worker processes against the seed load for o.duration; with rr non-nil
// they are static members and each is restarted once (SIGTERM, then a new process with the
// same instance id), and rr gets the restart figures.
func scaleRun(o scaleOpts, replicas int, rr *RollingRun) (ScaleRun, error) {
	run := ScaleRun{Replicas: replicas}
	name := fmt.Sprintf("scale%d", replicas)
	if rr != nil {
		name = "rolling"
	}
	topic := fmt.Sprintf("%s-%d", name, time.Now().UnixNano())
	group := topic + "-g"
	br, err := startBroker(o.brokers, 0, fmt.Sprintf("%s:%d", topic, o.partitions))
	if err != nil {
		return run, err
	}
	defer br.stop()
	dir, err := os.MkdirTemp("", "sluice-scale-")
	if err != nil {
		return run, err
	}
	defer os.RemoveAll(dir)
	slots := make([]*slot, replicas)
	var mu sync.Mutex // guards slots' incarnation lists (the sampler reads them)
	start := func(s *slot) error {
		k := len(s.incs)
		inc := &incarnation{sink: filepath.Join(dir, fmt.Sprintf("sink-%s-%d.bin", s.id, k)),
			stats: filepath.Join(dir, fmt.Sprintf("stats-%s-%d.jsonl", s.id, k)), initial: k == 0}
		args := []string{"worker", "--mode", "sluice", "--brokers", br.addr, "--topic", topic, "--group", group,
			"--budget", fmt.Sprint(o.budget), "--slots", fmt.Sprint(o.slots), "--sleep", o.sleep.String(),
			"--sink-file", inc.sink, "--stats-file", inc.stats}
		if rr != nil {
			args = append(args, "--instance-id", s.id)
		}
		c, err := startChild(true, args...)
		if err != nil {
			return err
		}
		inc.c = c
		mu.Lock()
		s.incs = append(s.incs, inc)
		mu.Unlock()
		return nil
	}
	var errs []error
	defer func() { // whatever happened, no worker outlives the run
		for _, s := range slots {
			if s != nil && len(s.incs) > 0 {
				select {
				case <-s.cur().c.done:
				default:
					s.cur().c.kill()
				}
			}
		}
	}()
	for i := range slots {
		slots[i] = &slot{id: fmt.Sprintf("%s-%d", name, i)}
		if err := start(slots[i]); err != nil {
			return run, err
		}
	}
	prod, err := startChild(false, "produce", "--brokers", br.addr, "--topic", topic, "--rate", fmt.Sprint(o.rate),
		"--size", fmt.Sprint(o.size), "--duration", o.duration.String())
	if err != nil {
		return run, err
	}
	t0 := time.Now()
	smp, err := startScaleSampler(br.addr, topic, o.partitions, slots, &mu, func(sm ScaleSample) {
		progressLine("[scale %s] %4.0fs/%.0fs  lag %7d  processed %7d  RSS %v MiB", name, sm.T, o.duration.Seconds(), sm.Lag, sm.Processed, mibs(sm.RSS))
	})
	if err != nil {
		return run, err
	}
	if rr != nil {
		if err := rollSlots(o, slots, t0, rr, start); err != nil {
			errs = append(errs, err)
		}
	}
	time.Sleep(time.Until(t0.Add(o.duration))) // the run's length, not a synchronisation
	var wg sync.WaitGroup
	for _, s := range slots {
		wg.Add(1)
		go func(inc *incarnation) { defer wg.Done(); inc.c.stop(90 * time.Second) }(s.cur())
	}
	wg.Wait()
	run.RunSeconds = time.Since(t0).Seconds()
	run.Samples = smp.stop()
	var sinks []string
	for _, s := range slots {
		for _, inc := range s.incs {
			sinks = append(sinks, inc.sink)
			if _, err := inc.c.result(); err != nil {
				errs = append(errs, fmt.Errorf("worker %s: %w", s.id, err))
			}
		}
	}
	select { // the producer stops on its own at duration
	case <-prod.done:
	case <-time.After(30 * time.Second):
		prod.stop(10 * time.Second)
	}
	if pr, err := prod.result(); err == nil {
		run.Produced = pr.Produced
	}
	if err := run.account(br.addr, group, topic, o.partitions, sinks); err != nil {
		errs = append(errs, err)
	}
	if rr != nil {
		rr.analyse(slots)
	}
	return run, errors.Join(errs...)
}

// account fills processed, lost, duplicates, lag and RSS figures from the sink logs, the
// group's committed offsets and the samples.
func (run *ScaleRun) account(addr, group, topic string, parts int, sinks []string) error {
	committed, hwm, err := offsets(addr, group, topic, parts)
	if err != nil {
		return err
	}
	sunk := map[int32]map[int64]int{}
	for _, path := range sinks {
		m, _, err := readSinkLog(path)
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		for p, offs := range m {
			if sunk[p] == nil {
				sunk[p] = map[int64]int{}
			}
			for off, n := range offs {
				sunk[p][off] += n
			}
		}
	}
	for p := range parts {
		c := max(committed[p], 0)
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
			run.Processed += int64(n)
			run.Duplicates += int64(n - 1)
		}
	}
	run.Throughput, run.LagSlope = secondHalfRates(run.Samples)
	for _, sm := range run.Samples {
		for i, r := range sm.RSS {
			for len(run.PeakRSS) <= i {
				run.PeakRSS = append(run.PeakRSS, 0)
			}
			run.PeakRSS[i] = max(run.PeakRSS[i], r)
			run.PeakRSSMax = max(run.PeakRSSMax, r)
		}
	}
	return nil
}

// secondHalfRates fits processed and lag over the second half of the run (by time):
// throughput (msgs/s) and lag slope (msgs/s).
func secondHalfRates(ss []ScaleSample) (tput, lag float64) {
	if len(ss) < 2 {
		return 0, 0
	}
	half := ss[len(ss)-1].T / 2
	var x, yp, yl []float64
	for _, s := range ss {
		if s.T >= half {
			x = append(x, s.T)
			yp = append(yp, float64(s.Processed))
			yl = append(yl, float64(s.Lag))
		}
	}
	return slope(x, yp), slope(x, yl)
}

func mibs(b []int64) []int {
	out := make([]int, len(b))
	for i, v := range b {
		out[i] = int(mib(v) + 0.5)
	}
	return out
}

// watermarkClient is a group-less consumer for high watermarks.
func watermarkClient(addr string) (*ckafka.Consumer, error) {
	return ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": addr, "group.id": "sluice-bench-watermarks", "log_level": 3})
}
