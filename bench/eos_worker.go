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
	budget                                 int64
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
	err = p.Run(ctx)
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
