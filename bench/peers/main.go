// Command peers is the seed scenario's consumer written with the Go Kafka libraries a user
// would pick instead of sluice, one mode per library, each as that library's documentation
// writes it. `go run ./bench peers` (in the main module) builds and runs it; it lives in its
// own module so that sluice's dependencies do not grow.
//
//	peers --mode kgo-pool|kgo-partition|watermill|watermill-buf16|kafka-go \
//	      --brokers ADDR --topic T --group G [--slots 10] [--sleep 20ms] [--sink-file PATH]
//
// Every mode hands each record to the same downstream as the sluice seed consumer (--slots
// slots, each busy --sleep per record) and appends (partition, offset) to --sink-file after it,
// so the bench checks lost and duplicate records the way it checks sluice's. It runs until
// SIGTERM or interrupt, shuts down as its library documents (committing what was processed),
// and prints a JSON result as its last stdout line.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// modes maps each --mode to its consumer. Each runs until ctx is done, then closes its client
// (committing what the downstream finished) before it returns.
var modes = map[string]func(ctx context.Context, cfg config, ds *downstream) error{
	"kgo-pool":        kgoPool,
	"kgo-partition":   kgoPerPartition,
	"watermill":       func(ctx context.Context, cfg config, ds *downstream) error { return watermillRouter(ctx, cfg, ds, 0) },
	"watermill-buf16": func(ctx context.Context, cfg config, ds *downstream) error { return watermillRouter(ctx, cfg, ds, 16) },
	"kafka-go":        kafkaGoReaders,
}

// config is what every mode is given.
type config struct {
	brokers, topic, group string
	slots                 int
}

// result is the last stdout line (the bench's WorkerResult fields).
type result struct {
	Mode    string  `json:"mode"`
	Count   int64   `json:"count"`
	Elapsed float64 `json:"elapsed_s"`
	Bytes   int64   `json:"bytes"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg config
	mode := flag.String("mode", "", "kgo-pool | kgo-partition | watermill | watermill-buf16 | kafka-go")
	flag.StringVar(&cfg.brokers, "brokers", "", "bootstrap servers")
	flag.StringVar(&cfg.topic, "topic", "", "topic")
	flag.StringVar(&cfg.group, "group", "", "group id")
	flag.IntVar(&cfg.slots, "slots", 10, "downstream slots")
	sleep := flag.Duration("sleep", 20*time.Millisecond, "downstream time per record")
	sinkFile := flag.String("sink-file", "", "append processed (partition, offset) here")
	// Flags the bench passes to every worker that only sluice uses.
	flag.Int64("budget", 0, "ignored (sluice only)")
	flag.Int("capacity", 0, "ignored (sluice only)")
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "worker" { // the bench starts every worker as "<program> worker --mode ..."
		args = args[1:]
	}
	if err := flag.CommandLine.Parse(args); err != nil {
		return err
	}
	consume, ok := modes[*mode]
	if !ok {
		return fmt.Errorf("unknown --mode %q", *mode)
	}
	if cfg.brokers == "" || cfg.topic == "" || cfg.group == "" {
		return errors.New("--brokers, --topic and --group are required")
	}
	ds := &downstream{slots: make(chan struct{}, cfg.slots), sleep: *sleep}
	if *sinkFile != "" {
		f, err := os.OpenFile(*sinkFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		ds.sink = f
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := consume(ctx, cfg, ds); err != nil {
		return fmt.Errorf("%s: %w", *mode, err)
	}
	r := result{Mode: *mode, Count: ds.n.Load(), Bytes: ds.bytes.Load()}
	if f, l := ds.first.Load(), ds.last.Load(); f > 0 {
		r.Elapsed = float64(l-f) / 1e9
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// downstream is the seed scenario's slow service: slots calls at a time, each taking sleep
// (10 × 20 ms = 500 records/s). It is safe for concurrent use; process blocks while every
// slot is busy.
type downstream struct {
	slots chan struct{}
	sleep time.Duration

	mu   sync.Mutex // serialises sink writes
	sink *os.File   // nil: no log

	n, bytes    atomic.Int64
	first, last atomic.Int64 // unix nanos
}

// process hands one record to the downstream and, once it returned, appends (partition,
// offset) to the sink log with one write, so a killed process leaves exactly what finished.
func (d *downstream) process(partition int32, offset int64, value []byte) {
	d.slots <- struct{}{}
	time.Sleep(d.sleep)
	<-d.slots
	if d.sink != nil {
		var b [12]byte
		binary.LittleEndian.PutUint32(b[:4], uint32(partition))
		binary.LittleEndian.PutUint64(b[4:], uint64(offset))
		d.mu.Lock()
		_, _ = d.sink.Write(b[:])
		d.mu.Unlock()
	}
	now := time.Now().UnixNano()
	d.first.CompareAndSwap(0, now)
	d.last.Store(now)
	d.bytes.Add(int64(len(value)))
	d.n.Add(1)
}
