// Command seedworker is bench seed's sluice consumer built as a service of its own would be:
// only sluice and its Kafka client (confluent-kafka-go, librdkafka) in the binary. The bench
// binary also carries the embedded broker's client, plotting and the other scenarios, and on
// this machine about 13 MiB more of its text was resident in a consumer run from it; the peer
// consumers of bench peers are programs of their own too (bench/peers).
//
// It is the README's minimal pipeline: a kafka.Source with the given budget (0: none given,
// the default configuration) and one Sink of --slots workers, each call taking --sleep (the
// downstream), appending (partition, offset) to --sink-file. On SIGTERM it drains, commits and
// prints a JSON line {"mode","count","elapsed_s","bytes"} as bench worker does.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "seedworker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "worker" { // invoked as the bench binary's worker subcommand
		args = args[1:]
	}
	fs := flag.NewFlagSet("seedworker", flag.ContinueOnError)
	mode := fs.String("mode", "sluice", "only sluice")
	brokers := fs.String("brokers", "", "bootstrap servers")
	topic := fs.String("topic", "", "topic")
	group := fs.String("group", "", "group id")
	budget := fs.Int64("budget", 0, "budget bytes (0: none given, kafka.Config's default)")
	slots := fs.Int("slots", 10, "sink concurrency")
	sleep := fs.Duration("sleep", 20*time.Millisecond, "sink time per message")
	sinkFile := fs.String("sink-file", "", "append sunk (partition, offset) here")
	capacity := fs.Int("capacity", 0, "sink input edge capacity (0: stage default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *mode != "sluice" {
		return fmt.Errorf("--mode %q: only sluice", *mode)
	}
	f, err := os.OpenFile(*sinkFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	src, err := kafka.NewSource(kafka.Config{Brokers: *brokers, GroupID: *group, Topics: []string{*topic},
		Budget: *budget, CommitInterval: time.Second, Logger: quiet})
	if err != nil {
		return err
	}
	var (
		mu          sync.Mutex // guards writes to f: one write per record, so a kill leaves whole records
		n, bytes    atomic.Int64
		first, last atomic.Int64 // unix nanos
	)
	var callNanos atomic.Int64 // time in the downstream's sleeps: its own ceiling is slots / mean
	sink := func(_ context.Context, ev *stage.Event) error {
		t0 := time.Now()
		time.Sleep(*sleep)
		callNanos.Add(int64(time.Since(t0)))
		var rec [12]byte
		binary.LittleEndian.PutUint32(rec[:4], uint32(ev.Partition))
		binary.LittleEndian.PutUint64(rec[4:], uint64(ev.Offset))
		mu.Lock()
		_, werr := f.Write(rec[:])
		mu.Unlock()
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		last.Store(now)
		bytes.Add(int64(len(ev.Key) + len(ev.Value)))
		n.Add(1)
		return werr
	}
	opts := []stage.Option{stage.WithConcurrency(*slots)}
	if *capacity > 0 {
		opts = append(opts, stage.WithCapacity(*capacity))
	}
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	pipeline.To(b.Source(), stage.Sink("sink", sink, opts...))
	p, err := b.Build()
	if err != nil {
		_ = src.Close(context.Background())
		return err
	}
	if err := p.Run(ctx); err != nil {
		return err
	}
	st := p.Stats()
	fmt.Fprintf(os.Stderr, "\nseedworker: emitted=%d completed=%d high_water=%d window=%d/%d bytes\n",
		st.Emitted, st.Completed, st.HighWaterBytes, st.WindowBytes, st.BudgetBytes)
	if c := n.Load(); c > 0 {
		mean := time.Duration(callNanos.Load() / c)
		fmt.Fprintf(os.Stderr, "seedworker: downstream sleeps of %v took %v on average: at most %.1f/s with %d slots\n",
			*sleep, mean, float64(*slots)/mean.Seconds(), *slots)
	}
	return json.NewEncoder(os.Stdout).Encode(struct {
		Mode    string  `json:"mode"`
		Count   int64   `json:"count"`
		Elapsed float64 `json:"elapsed_s"`
		Bytes   int64   `json:"bytes"`
	}{"sluice", n.Load(), float64(last.Load()-first.Load()) / 1e9, bytes.Load()})
}
