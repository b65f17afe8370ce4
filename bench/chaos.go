package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/chaos"
)

// runChaos is the fault suite's chaos scenario as a soak: random broker and group faults for
// --duration while records flow, then lost/duplicates. It runs the embedded broker in process
// (fault injection needs it), so peak_rss_bytes covers the broker too.
func runChaos(args []string) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	dur := fs.Duration("duration", 5*time.Minute, "how long faults are injected")
	out := fs.String("out", "bench/results", "output directory")
	rate := fs.Int("rate", 2000, "records produced per second")
	every := fs.Duration("every", time.Second, "mean time between faults")
	seed := fs.Uint64("seed", 0, "random seed (0: from the clock)")
	meta := fs.Int("commit-metadata", 0, "the consumers' kafka.Config.CommitMetadataMaxBytes (0: the default; negative: off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	rep, err := chaos.Run(ctx, chaos.Config{Duration: *dur, Rate: *rate, Every: *every, Seed: *seed, CommitMetadataMaxBytes: *meta,
		Progress: func(r chaos.Report) {
			progressLine("[chaos] %5.0fs/%v  faults %4d  produced %8d  processed %8d  duplicates %6d  RSS %6.1f MiB",
				r.DurationS, *dur, r.FaultsInjected, r.Produced, r.ProcessedUnique, r.Duplicates, float64(r.PeakRSSBytes)/(1<<20))
		}})
	endProgress()
	if err != nil {
		return err
	}
	p, err := writeJSON(*out, "chaos", rep)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "chaos: %d faults %v; produced %d, processed %d unique, lost %d, duplicates %d (seed %d)\nwrote %s\n",
		rep.FaultsInjected, rep.Faults, rep.Produced, rep.ProcessedUnique, rep.Lost, rep.Duplicates, rep.Seed, p)
	if rep.Lost != 0 {
		return fmt.Errorf("chaos: %d records lost", rep.Lost)
	}
	return nil
}
