// Command seed replays sluice's seed incident as a service: a producer of 980 records/s of
// 40 KiB (~38 MiB/s) feeds a downstream that has 10 concurrent slots of 20 ms each (500
// records/s). Without a budget the consumer would buffer the difference until it was
// OOM-killed; with sluice the in-flight bytes stay under the budget (64 MiB by default),
// the source pauses partitions, the lag grows instead of the RSS, and the progress line shows
// RSS flat and "downstream" as the bottleneck.
//
//	go run ./examples/seed --duration 30s
//
// Without --brokers it starts an embedded broker as its own process and the producer above.
// Its main is wired as examples/orders' is (see there), without a producer of its own.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/kafka/kprom"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pipeline/observe"
	"github.com/sluicehq/sluice/pipeline/process"
	"github.com/sluicehq/sluice/stage"
)

const (
	recordBytes = 40 << 10
	rate        = 980
	slots       = 10
	callTime    = 20 * time.Millisecond
)

// config is the command line.
type config struct {
	brokers, topic, group, http string
	budget                      process.Bytes // 0: from the cgroup limit
	duration                    time.Duration
	debug                       bool
	security                    kafka.Security // from the security flags; empty: plaintext
	instanceID                  string         // static group membership (group.instance.id); empty: dynamic
}

// hooks let tests watch a run in process; main passes none.
type hooks struct {
	listening func(addr string)    // the HTTP server's bound address
	drained   func(brokers string) // the pipeline returned (final commit made); the broker still runs
}

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stderr, hooks{})) }

// run parses args and serves until ctx is done, --duration elapses or SIGTERM/SIGINT (a
// second signal exits at once with status 1). It returns the exit code: 2 for bad flags.
func run(ctx context.Context, args []string, stderr io.Writer, h hooks) int {
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("service", "seed")
	var c config
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.brokers, "brokers", "", "Kafka bootstrap servers; empty starts an embedded broker (its own process) and a load generator")
	fs.StringVar(&c.topic, "topic", "seed", "input topic")
	fs.StringVar(&c.group, "group", "seed-consumer", "consumer group")
	fs.Var(&c.budget, "budget", "whole memory budget for data (e.g. 64MiB); default 1/4 of the cgroup memory limit, else 64MiB")
	fs.StringVar(&c.http, "http", "127.0.0.1:8080", "HTTP listen address (metrics, health, readiness, debug pages)")
	fs.DurationVar(&c.duration, "duration", 0, "run this long, then drain and exit 0 (default: until SIGTERM/SIGINT)")
	fs.BoolVar(&c.debug, "debug", false, "serve /debug/pipeline and /debug/pprof/ (default: only when --http is a loopback address)")
	fs.StringVar(&c.instanceID, "instance-id", "", "static group membership id (group.instance.id), e.g. the pod name: a restart within the session timeout keeps the partitions without a rebalance (default: dynamic membership)")
	security := kafka.SecurityFlags(fs, "SLUICE_SASL_PASSWORD") // the password only from the environment or a file
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = process.EnvFlags(fs, "SLUICE_") // the command line wins over SLUICE_<NAME>
	}
	if err == nil {
		c.security, err = security()
	}
	if err == nil && c.brokers == "" && !c.security.IsZero() {
		err = errors.New("security flags need --brokers: the embedded broker is plaintext")
	}
	if err == nil && (fs.NArg() > 0 || c.topic == "" || c.group == "") {
		err = fmt.Errorf("unexpected arguments %q, or an empty --topic or --group", fs.Args())
	}
	if err != nil {
		log.Error("flags", "err", err)
		return 2
	}
	if !isSet(fs, "debug") {
		c.debug = observe.DebugByDefault(c.http)
	}
	if err := serve(ctx, c, stderr, log, h); err != nil {
		log.Error("exit", "err", err)
		return 1
	}
	log.Info("exit", "code", 0)
	return 0
}

func isSet(fs *flag.FlagSet, name string) (set bool) {
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func serve(ctx context.Context, c config, stderr io.Writer, log *slog.Logger, h hooks) error {
	fit, undo := process.FitProcess(log, process.WithBudget(int64(c.budget)), process.WithDefaultBudget(64<<20))
	defer undo()
	ctx, stop := process.SignalContext(ctx, log)
	defer stop()
	if c.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.duration)
		defer cancel()
	}
	if c.brokers == "" { // the embedded broker in its own process, so our RSS is ours
		broker, err := kafkatest.StartProcess(ctx, "--topic", c.topic+":8")
		if err != nil {
			return fmt.Errorf("embedded broker: %w", err)
		}
		defer broker.Stop()
		c.brokers = broker.Addr()
		log.Info("embedded broker", "addr", c.brokers, "pid", broker.Pid())
		genCtx, stopGen := context.WithCancel(ctx)
		genDone := make(chan struct{})
		go func() {
			defer close(genDone)
			n, err := kafkatest.Generate(genCtx, c.brokers, c.topic, rate, genRecord)
			log.Info("load generator stopped", "produced", n, "err", err)
		}()
		defer func() { stopGen(); <-genDone }() // before the broker stops
	}

	if !c.security.IsZero() {
		log.Info("kafka security", "security", c.security) // its LogValue redacts the passwords
	}
	src, err := kafka.NewSource(kafka.Config{Brokers: c.brokers, GroupInstanceID: c.instanceID, Security: c.security, GroupID: c.group, Topics: []string{c.topic},
		Budget: fit.Budget, Ordering: kafka.OrderKey, Logger: log, CommitInterval: time.Second, StatsInterval: time.Second,
		Overrides: map[string]any{"auto.offset.reset": "earliest", "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 10, "log_level": 4}})
	if err != nil {
		return err
	}
	p, err := build(src, log)
	if err != nil {
		src.Close(context.Background())
		return err
	}

	mon := observe.New(p, observe.WithSource(kprom.New(src, nil)), observe.WithBudget(fit.Budget), observe.WithLogger(log),
		observe.WithProgress(stderr, 5*time.Second))
	reg := prometheus.NewRegistry()
	reg.MustRegister(mon.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mon.Mount(mux, c.debug)
	ln, err := net.Listen("tcp", c.http)
	if err != nil {
		src.Close(context.Background())
		return err
	}
	var wg sync.WaitGroup // the server's and the monitor's goroutines end before serve returns
	defer wg.Wait()
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() { _ = srv.Serve(ln) })
	defer srv.Close()
	log.Info("http listening", "addr", ln.Addr().String(), "debug", c.debug)
	if h.listening != nil {
		h.listening(ln.Addr().String())
	}
	monCtx, stopMon := context.WithCancel(context.Background()) // progress goes on through the drain
	defer stopMon()
	wg.Go(func() { _ = mon.Run(monCtx) })

	log.Info("running", "topic", c.topic, "group", c.group, "duration", c.duration)
	if err := p.Run(ctx); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	log.Info("drained", "completed", p.Stats().Completed, "commits", src.Stats().Commits, "pauses", src.Stats().Pauses)
	if h.drained != nil {
		h.drained(c.brokers)
	}
	return nil
}

// payload is shared by every generated record (read-only).
var payload = make([]byte, recordBytes)

// genRecord is the load generator's record i: 40 KiB starting with i.
func genRecord(i int64) (key, value []byte) {
	v := make([]byte, recordBytes)
	copy(v, payload)
	binary.BigEndian.PutUint64(v, uint64(i))
	return nil, v
}

// build links the pipeline on src: a parse stage, then the slow downstream.
func build(src *kafka.Source, log *slog.Logger) (*pipeline.Pipeline, error) {
	b := pipeline.New(src, pipeline.WithLogger(log), pipeline.WithName("seed"))
	ids := pipeline.Then(b.Source(), stage.Map("parse", func(_ context.Context, ev *stage.Event) (uint64, error) {
		if len(ev.Value) < 8 {
			return 0, nil
		}
		return binary.BigEndian.Uint64(ev.Value), nil
	}, stage.WithCapacity(256)))
	pipeline.To(ids, stage.Sink("downstream", func(ctx context.Context, _ uint64) error {
		t := time.NewTimer(callTime) // the slow downstream call
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}, stage.WithConcurrency(slots)))
	return b.Build()
}
