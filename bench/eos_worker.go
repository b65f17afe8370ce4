package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// The copy worker (hidden subcommand "copy") is bench eos's measured process: kafka.Source →
// Map "copy" → the producer's Sink, at-least-once or exactly-once. Each output record is the
// input's key and value (copied: the event's bytes are the pipeline's) with two headers the
// bench's read_committed reader needs: the input's partition and offset (lost and duplicates)
// and the input record's timestamp (latency).

// Header keys of an output record.
const (
	hdrInput = "sluice-bench-in" // input partition (int32) then offset (int64), big-endian
	hdrTime  = "sluice-bench-ts" // input record timestamp, unix milliseconds (int64), big-endian
)

// copyHeaders encodes the input's position and timestamp.
func copyHeaders(ev *stage.Event) []stage.Header {
	in := make([]byte, 12)
	binary.BigEndian.PutUint32(in, uint32(ev.Partition))
	binary.BigEndian.PutUint64(in[4:], uint64(ev.Offset))
	ts := make([]byte, 8)
	binary.BigEndian.PutUint64(ts, uint64(ev.Timestamp.UnixMilli()))
	return []stage.Header{{Key: hdrInput, Value: in}, {Key: hdrTime, Value: ts}}
}

// parseCopyHeaders decodes copyHeaders; ok is false when a header is missing or malformed.
func parseCopyHeaders(get func(key string) []byte) (part int32, off int64, tsMs int64, ok bool) {
	in, ts := get(hdrInput), get(hdrTime)
	if len(in) != 12 || len(ts) != 8 {
		return 0, 0, 0, false
	}
	return int32(binary.BigEndian.Uint32(in)), int64(binary.BigEndian.Uint64(in[4:])), int64(binary.BigEndian.Uint64(ts)), true
}

// copyOpts is the copy worker's command line.
type copyOpts struct {
	brokers, topic, outTopic, group, txnID string
	exactlyOnce                            bool
	commitInterval                         time.Duration
	budget, backlog                        int64
	cpuProfile                             string
}

func runCopyWorker(args []string, stdout io.Writer) error {
	var o copyOpts
	fs := flag.NewFlagSet("copy", flag.ContinueOnError)
	fs.StringVar(&o.brokers, "brokers", "", "bootstrap servers")
	fs.StringVar(&o.topic, "topic", "", "input topic")
	fs.StringVar(&o.outTopic, "out-topic", "", "output topic")
	fs.StringVar(&o.group, "group", "", "group id")
	fs.BoolVar(&o.exactlyOnce, "exactly-once", false, "exactly-once mode (Config.ExactlyOnce)")
	fs.StringVar(&o.txnID, "transactional-id", "", "--exactly-once: Config.TransactionalID")
	fs.DurationVar(&o.commitInterval, "commit-interval", 0, "Config.CommitInterval (0: the mode's default)")
	fs.Int64Var(&o.budget, "budget", 64<<20, "budget bytes")
	fs.Int64Var(&o.backlog, "backlog", 0, "the stall summary covers the first this many copies (0: all)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the run here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var c counter
	res, err := copyPipeline(ctx, o, &c)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

// copyPipeline runs the copy pipeline until ctx is done (then drains and commits) and returns
// the worker's figures: the first copy's time, and the source's commit counters.
func copyPipeline(ctx context.Context, o copyOpts, c *counter) (WorkerResult, error) {
	mode := "at-least-once"
	if o.exactlyOnce {
		mode = "exactly-once"
	}
	src, err := kafka.NewSource(kafka.Config{
		Brokers: o.brokers, GroupID: o.group, Topics: []string{o.topic}, Budget: o.budget,
		ExactlyOnce: o.exactlyOnce, TransactionalID: o.txnID, CommitInterval: o.commitInterval,
		Logger: quietLogger(), Overrides: map[string]any{"auto.offset.reset": "earliest"},
	})
	if err != nil {
		return WorkerResult{}, err
	}
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: o.outTopic})
	if err != nil {
		_ = src.Close(context.Background())
		return WorkerResult{}, err
	}
	defer prod.Close(context.Background())
	b := pipeline.New(src, pipeline.WithLogger(quietLogger()))
	// Stalls: gaps of more than 20 ms between copies while input waits (a barrier's drain and
	// commit, a pause). The stage has one worker: only it touches them until Run returns.
	var last time.Time
	var stalls int64
	var stalled time.Duration
	recs := pipeline.Then(b.Source(), stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		now := time.Now()
		if gap := now.Sub(last); !last.IsZero() && gap > 20*time.Millisecond && gap < time.Second+o.commitInterval {
			stalls++
			stalled += gap
		}
		last = now
		c.add(len(ev.Key) + len(ev.Value))
		return kafka.Record{Key: append([]byte(nil), ev.Key...), Value: append([]byte(nil), ev.Value...), Headers: copyHeaders(ev)}, nil
	}))
	pipeline.To(recs, prod.Sink("produce"))
	p, err := b.Build()
	if err != nil {
		_ = src.Close(context.Background())
		return WorkerResult{}, err
	}
	start := time.Now()
	sctx, stopSampling := context.WithCancel(context.Background())
	stallsDone := make(chan stallSummary, 1)
	go func() { stallsDone <- sampleStalls(sctx, c, prod, o.backlog) }()
	err = p.Run(ctx)
	stopSampling()
	ss := <-stallsDone
	fmt.Fprintf(os.Stderr, "\ncopy worker stalls (copies stopped ≥ 20 ms, first %d copies): %s\n", o.backlog, ss)
	st, ps := src.Stats(), prod.Stats()
	n := max(c.n.Load(), 1)
	fmt.Fprintf(os.Stderr, "\ncopy worker (%s, commit interval %v): %d copied in %.1fs, CPU %.1f µs/msg; %d stalls of %v on average (%v in all); source commits=%d txn_commits=%d txn_aborts=%d errors=%d pauses=%d; producer queue_full=%d delivery_errors=%d\n",
		mode, o.commitInterval, c.n.Load(), time.Since(start).Seconds(), float64(processCPU())/1e3/float64(n), stalls, stalled/time.Duration(max(stalls, 1)), stalled,
		st.Commits, st.TxnCommits, st.TxnAborts, st.Errors, st.Pauses, ps.QueueFull, ps.DeliveryErrors)
	if err != nil {
		return WorkerResult{}, fmt.Errorf("copy pipeline (%s): %w", mode, err)
	}
	r := c.result(mode)
	r.FirstUnixNs, r.TxnCommits, r.TxnAborts = c.first.Load(), st.TxnCommits, st.TxnAborts
	r.Stalls, r.StalledNs = stalls, int64(stalled)
	return r, nil
}

// stallSummary decomposes the copy stage's stalls, as sampleStalls saw them.
type stallSummary struct {
	n                   int
	depth               []float64 // records awaiting delivery when the copies stopped
	drainMs, afterMs    []float64 // until none awaited delivery; from then until the copies resumed
	undrained           int       // stalls during which records always awaited delivery
	undrainedMs, totalS float64
}

func (s stallSummary) String() string {
	return fmt.Sprintf("%d (%.1fs in all); %d with the producer drained: in flight at the stop p50 %.0f records, drain p50 %.0f ms p90 %.0f ms, then until copies resumed p50 %.0f ms p90 %.0f ms; %d never drained (%.1fs)",
		s.n, s.totalS, len(s.drainMs), percentile(s.depth, 0.5), percentile(s.drainMs, 0.5), percentile(s.drainMs, 0.9),
		percentile(s.afterMs, 0.5), percentile(s.afterMs, 0.9), s.undrained, s.undrainedMs/1e3)
}

// sampleStalls samples the number of copies and the producer's records awaiting delivery
// every 2 ms until ctx is done or limit copies were made (0: no limit). A stall is a stretch of 20 ms or more without a copy (at an
// exactly-once barrier: the source emits nothing until the transaction committed); it is split
// at the moment nothing awaited delivery any more (the barrier's drain) into the drain and
// what follows (the offsets, the commit, the next transaction's begin, the next emission).
func sampleStalls(ctx context.Context, c *counter, prod *kafka.Producer, limit int64) stallSummary {
	var s stallSummary
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	lastN, lastChange := c.n.Load(), time.Now()
	var depth int64
	var drained time.Time
	for {
		select {
		case <-ctx.Done():
			return s
		case now := <-t.C:
			n, out := c.n.Load(), prod.Stats().Outstanding
			if limit > 0 && lastN >= limit {
				return s
			}
			if n == lastN {
				if drained.IsZero() && out == 0 && now.Sub(lastChange) < time.Minute {
					drained = now
				}
				continue
			}
			if gap := now.Sub(lastChange); gap >= 20*time.Millisecond && lastN > 0 {
				s.n++
				s.totalS += gap.Seconds()
				if drained.IsZero() {
					s.undrained++
					s.undrainedMs += float64(gap.Milliseconds())
				} else {
					s.depth = append(s.depth, float64(depth))
					s.drainMs = append(s.drainMs, float64(drained.Sub(lastChange).Microseconds())/1e3)
					s.afterMs = append(s.afterMs, float64(now.Sub(drained).Microseconds())/1e3)
				}
			}
			lastN, lastChange, drained, depth = n, now, time.Time{}, out
		}
	}
}
