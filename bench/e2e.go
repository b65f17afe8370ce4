package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sizeCounts parses "100:500000,1024:200000".
func sizeCounts(s string) ([][2]int, error) {
	var out [][2]int
	for _, f := range strings.Split(s, ",") {
		a, b, ok := strings.Cut(f, ":")
		sz, err1 := strconv.Atoi(a)
		n, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad size:count %q", f)
		}
		out = append(out, [2]int{sz, n})
	}
	return out, nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// consumeOnce runs one measured worker over a pre-filled topic and samples its RSS.
func consumeOnce(addr, topic string, pin bool, expect int64, maxDur time.Duration, label string, args ...string) (WorkerResult, int64, error) {
	group := fmt.Sprintf("%s-%s-%d", topic, label, time.Now().UnixNano())
	a := append([]string{"worker", "--brokers", addr, "--topic", topic, "--group", group,
		"--expect", fmt.Sprint(expect), "--max-duration", maxDur.String()}, args...)
	w, err := startChild(pin, a...)
	if err != nil {
		return WorkerResult{}, 0, err
	}
	s := StartSampler(w.pid(), 500*time.Millisecond, nil, func(sm Sample) {
		progressLine("[%s] %4.0fs RSS %7.1f MiB", label, sm.T, mib(sm.RSS))
	})
	select {
	case <-w.done:
	case <-time.After(maxDur + 90*time.Second):
		w.stop(30 * time.Second)
	}
	ss := s.Stop()
	r, err := w.result()
	return r, peakRSS(ss), err
}

func prefill(addr, topic string, size, n int) error {
	progressLine("prefilling %s with %d × %d B", topic, n, size)
	got, err := produce(addr, topic, 0, size, int64(n), 0)
	if err == nil && got != int64(n) {
		err = fmt.Errorf("prefill %s: %d of %d delivered", topic, got, n)
	}
	return err
}

// prefilledTopics starts (or connects to) the broker with one topic per size and fills each
// with its count of messages. It returns the broker and the topic names, in sc's order.
func prefilledTopics(prefix, brokers string, sc [][2]int, parts int) (*brokerHandle, []string, error) {
	suffix := time.Now().UnixNano()
	names := make([]string, len(sc))
	specs := make([]string, len(sc))
	for i, s := range sc {
		names[i] = fmt.Sprintf("%s-%d-%d", prefix, s[0], suffix)
		specs[i] = fmt.Sprintf("%s:%d", names[i], parts)
	}
	br, err := startBroker(brokers, 0, specs...)
	if err != nil {
		return nil, nil, err
	}
	for i, s := range sc {
		if err := prefill(br.addr, names[i], s[0], s[1]); err != nil {
			br.stop()
			return nil, nil, err
		}
	}
	return br, names, nil
}

func runE2E(args []string) error {
	fs := flag.NewFlagSet("e2e", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "bootstrap servers (default: embedded kfakebroker process)")
	out := fs.String("out", "bench/results", "output directory")
	counts := fs.String("sizes", "100:600000,1024:300000,40960:12000", "message bytes:count per topic")
	rounds := fs.Int("rounds", 2, "alternating rounds (bare, sluice) per size")
	parts := fs.Int("partitions", 8, "partitions per topic")
	maxDur := fs.Duration("duration", 30*time.Second, "cap of one consumption run")
	profile := fs.String("profile", "", "write each run's CPU profile into this directory")
	warmup := fs.Bool("warmup", true, "read each topic once, unmeasured, before the rounds")
	capacity := fs.Int("capacity", 0, "the sluice stage's input capacity (0: the stage default)")
	pin := fs.Bool("pin", true, "pin each measured consumer to CPU 0 with GOMAXPROCS=1, away from the broker process (false: all CPUs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sc, err := sizeCounts(*counts)
	if err != nil {
		return err
	}
	res := E2EResult{Scenario: "e2e"}
	br, topics, err := prefilledTopics("e2e", *brokers, sc, *parts)
	if err != nil {
		return err
	}
	defer br.stop()
	for i, s := range sc {
		topic := topics[i]
		row := E2ERow{MessageBytes: s[0], Messages: int64(s[1])}
		var bb, sb, bc, sc []float64 // MB/s and CPU ns/msg per round
		if *warmup {
			// The first read of a freshly written topic is sometimes several times slower (the
			// broker's first pass over it): read it once, unmeasured, before the rounds.
			if _, _, err := consumeOnce(br.addr, topic, *pin, int64(s[1]), *maxDur, fmt.Sprintf("e2e %dB warm-up", s[0]), "--mode", "bare"); err != nil {
				return err
			}
		}
		for r := range *rounds {
			for _, mode := range []string{"bare", "sluice-fast"} {
				args := []string{"--mode", mode}
				if mode == "sluice-fast" && *capacity > 0 {
					args = append(args, "--capacity", fmt.Sprint(*capacity))
				}
				if *profile != "" {
					args = append(args, "--cpuprofile", filepath.Join(*profile, fmt.Sprintf("e2e-%d-%s-%d.pprof", s[0], mode, r+1)))
				}
				wr, _, err := consumeOnce(br.addr, topic, *pin, int64(s[1]), *maxDur, fmt.Sprintf("e2e %dB %s #%d", s[0], mode, r+1), args...)
				if err != nil {
					return err
				}
				rate := float64(wr.Count) / wr.Elapsed
				mbs := float64(wr.Bytes) / wr.Elapsed / 1e6
				cpu := wr.CPU * 1e9 / float64(max(wr.Count, 1))
				fmt.Fprintf(os.Stderr, "\n%d B %-11s round %d: %d msgs in %.2fs = %.0f msgs/s, %.1f MB/s, CPU %.0f ns/msg\n", s[0], mode, r+1, wr.Count, wr.Elapsed, rate, mbs, cpu)
				if mode == "bare" {
					row.BareRounds = append(row.BareRounds, rate)
					bb, bc = append(bb, mbs), append(bc, cpu)
				} else {
					row.SluiceRounds = append(row.SluiceRounds, rate)
					sb, sc = append(sb, mbs), append(sc, cpu)
				}
			}
		}
		row.BareMsgsPerS, row.SluiceMsgsPS = median(row.BareRounds), median(row.SluiceRounds)
		row.BareMBPerS, row.SluiceMBPerS = median(bb), median(sb)
		row.BareCPUNsPerMsg, row.SluiceCPUNsPerMsg = median(bc), median(sc)
		// Each round pairs a bare run with the sluice run right after it: the ratio is the
		// median of the rounds' ratios, so a slow moment of the machine or broker, which hits
		// both runs of a round, does not count against one of them.
		for r := range row.BareRounds {
			if row.BareRounds[r] > 0 {
				row.RoundRatios = append(row.RoundRatios, row.SluiceRounds[r]/row.BareRounds[r])
			}
		}
		row.Ratio = median(row.RoundRatios)
		res.Results = append(res.Results, row)
	}
	p, err := writeJSON(*out, "e2e", res)
	if err != nil {
		return err
	}
	if err := plotE2E(res, filepath.Join(*out, "e2e.svg")); err != nil {
		return err
	}
	for _, r := range res.Results {
		fmt.Fprintf(os.Stderr, "e2e %6d B: bare %.0f msgs/s (%.1f MB/s), sluice %.0f msgs/s (%.1f MB/s), ratio %.3f\n",
			r.MessageBytes, r.BareMsgsPerS, r.BareMBPerS, r.SluiceMsgsPS, r.SluiceMBPerS, r.Ratio)
	}
	fmt.Fprintln(os.Stderr, "wrote", p, "and e2e.svg")
	return nil
}

func runSweep(args []string) error {
	fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "bootstrap servers (default: embedded kfakebroker process)")
	out := fs.String("out", "bench/results", "output directory")
	counts := fs.String("sizes", "1024:300000,40960:12000", "message bytes:count per topic (each point reads up to count)")
	budgets := fs.String("budgets", "8,16,32,64,128,256", "budgets in MiB")
	parts := fs.Int("partitions", 8, "partitions per topic")
	dur := fs.Duration("duration", 10*time.Second, "cap of one point (from its first message)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sc, err := sizeCounts(*counts)
	if err != nil {
		return err
	}
	res := SweepResult{Scenario: "sweep"}
	br, topics, err := prefilledTopics("sweep", *brokers, sc, *parts)
	if err != nil {
		return err
	}
	defer br.stop()
	for i, s := range sc {
		topic := topics[i]
		for _, bs := range strings.Split(*budgets, ",") {
			b, err := strconv.ParseInt(strings.TrimSpace(bs), 10, 64)
			if err != nil {
				return err
			}
			wr, peak, err := consumeOnce(br.addr, topic, true, int64(s[1]), *dur, fmt.Sprintf("sweep %dB budget %dMiB", s[0], b), "--mode", "sluice-fast", "--budget", fmt.Sprint(b<<20))
			if err != nil {
				return err
			}
			row := SweepRow{MessageBytes: s[0], BudgetBytes: b << 20, MsgsPerS: float64(wr.Count) / wr.Elapsed,
				PeakRSS: peak, MBPerS: float64(wr.Bytes) / wr.Elapsed / 1e6, Messages: wr.Count}
			fmt.Fprintf(os.Stderr, "\nsweep %6d B budget %3d MiB: %.0f msgs/s (%.1f MB/s), peak RSS %.1f MiB\n", s[0], b, row.MsgsPerS, row.MBPerS, mib(peak))
			res.Results = append(res.Results, row)
		}
	}
	p, err := writeJSON(*out, "sweep", res)
	if err != nil {
		return err
	}
	if err := plotSweep(res, filepath.Join(*out, "sweep.svg")); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", p, "and sweep.svg")
	return nil
}
