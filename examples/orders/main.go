// Command orders is sluice's main example service: it consumes JSON order events, decodes
// them (bad JSON goes to a dead-letter topic), enriches each through a slow I/O-like call
// with per-key ordering, batches them and produces the enriched orders to an output topic,
// committing an order's offset only once its enriched record is delivered. With
// --exactly-once the enriched orders, the dead letters and the offsets of the orders they came
// from commit in one Kafka transaction (--transactional-id names this instance).
//
//	go run ./examples/orders --duration 20s
//	go run ./examples/orders --duration 20s --exactly-once
//
// Without --brokers it starts an embedded broker as its own process (topics orders,
// orders-enriched, orders-dlq), so the service's RSS and metrics are its own, and a load
// generator of ~2000 orders/s, ~1% of them invalid JSON. Open
// http://127.0.0.1:8080/debug/pipeline for the live graph, /metrics for Prometheus. Every flag
// also reads its SLUICE_<NAME> variable (--out-topic: SLUICE_OUT_TOPIC).
//
// It is written as a user's own service would be, from public packages only: the pipeline,
// pipeline/process (sizing to the container, signals), pipeline/observe and kafka/kprom
// (metrics, health, readiness, the page, the progress line).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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

// Order is an input event.
type Order struct {
	ID       string  `json:"id"`
	Customer string  `json:"customer"`
	Amount   float64 `json:"amount"`
	Items    int     `json:"items"`
}

// Enriched is an output event.
type Enriched struct {
	Order
	Tier       string    `json:"tier"`
	EnrichedAt time.Time `json:"enriched_at"`
}

// config is the command line.
type config struct {
	brokers, topic, group, out, dlq, http string
	budget                                process.Bytes // 0: from the cgroup limit
	duration                              time.Duration
	debug                                 bool
	security                              kafka.Security // from the security flags; empty: plaintext
	instanceID                            string         // static group membership (group.instance.id); empty: dynamic
	exactlyOnce                           bool           // one transaction per commit interval (kafka.Config.ExactlyOnce)
	txnID                                 string         // --exactly-once: kafka.Config.TransactionalID
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
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("service", "orders")
	var c config
	fs := flag.NewFlagSet("orders", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.brokers, "brokers", "", "Kafka bootstrap servers; empty starts an embedded broker (its own process) and a load generator")
	fs.StringVar(&c.topic, "topic", "orders", "input topic")
	fs.StringVar(&c.group, "group", "orders-enricher", "consumer group")
	fs.StringVar(&c.out, "out-topic", "orders-enriched", "output topic")
	fs.StringVar(&c.dlq, "dlq-topic", "orders-dlq", "dead-letter topic for undecodable orders")
	fs.Var(&c.budget, "budget", "whole memory budget for data (e.g. 64MiB); default 1/4 of the cgroup memory limit, else 64MiB")
	fs.StringVar(&c.http, "http", "127.0.0.1:8080", "HTTP listen address (metrics, health, readiness, debug pages)")
	fs.DurationVar(&c.duration, "duration", 0, "run this long, then drain and exit 0 (default: until SIGTERM/SIGINT)")
	fs.BoolVar(&c.debug, "debug", false, "serve /debug/pipeline and /debug/pprof/ (default: only when --http is a loopback address)")
	fs.StringVar(&c.instanceID, "instance-id", "", "static group membership id (group.instance.id), e.g. the pod name: a restart within the session timeout keeps the partitions without a rebalance (default: dynamic membership)")
	fs.BoolVar(&c.exactlyOnce, "exactly-once", false, "consume, enrich and produce in one Kafka transaction per commit interval: a read_committed reader of the output sees each order once, whatever crashes, rebalances or aborts")
	fs.StringVar(&c.txnID, "transactional-id", "", "--exactly-once: this instance's transactional.id, unique to it and stable across its restarts (default: the group, then --instance-id or else the host name, e.g. the pod name)")
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
	if err == nil {
		err = c.transactionalID()
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

// transactionalID checks --transactional-id against --exactly-once and defaults it to
// <group>-<instance id>, or <group>-<host name> (a pod's name) without one: unique to this
// instance and, in a StatefulSet, stable across its restarts, so a restarted instance fences
// its predecessor. Two processes given the same id fence each other: the older one stops with
// kafka.ErrFenced.
func (c *config) transactionalID() error {
	switch {
	case !c.exactlyOnce && c.txnID != "":
		return errors.New("--transactional-id (SLUICE_TRANSACTIONAL_ID) is set without --exactly-once")
	case !c.exactlyOnce || c.txnID != "":
		return nil
	case c.instanceID != "":
		c.txnID = c.group + "-" + c.instanceID
		return nil
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return fmt.Errorf("--exactly-once: no --transactional-id and no host name to default it to: %v", err)
	}
	c.txnID = c.group + "-" + host
	return nil
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
		broker, err := kafkatest.StartProcess(ctx, "--topic", c.topic+":8", "--topic", c.out+":8", "--topic", c.dlq+":1")
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
			n, err := kafkatest.Generate(genCtx, c.brokers, c.topic, 2000, genOrder)
			log.Info("load generator stopped", "produced", n, "err", err)
		}()
		defer func() { stopGen(); <-genDone }() // before the broker stops
	}

	if !c.security.IsZero() {
		log.Info("kafka security", "security", c.security) // its LogValue redacts the passwords
	}
	commitInterval := time.Second
	if c.exactlyOnce {
		commitInterval = 0 // the mode's default: a transaction every 100 ms
		log.Info("exactly once", "transactional_id", c.txnID)
	}
	src, err := kafka.NewSource(kafka.Config{Brokers: c.brokers, GroupInstanceID: c.instanceID, Security: c.security, GroupID: c.group, Topics: []string{c.topic},
		Budget: fit.Budget, Ordering: kafka.OrderKey, Logger: log, CommitInterval: commitInterval, StatsInterval: time.Second,
		ExactlyOnce: c.exactlyOnce, TransactionalID: c.txnID,
		Overrides: map[string]any{"auto.offset.reset": "earliest", "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 10, "log_level": 4}})
	if err != nil {
		return err
	}
	// The source's brokers, budget and logger (with --exactly-once, its one transactional
	// producer: the sink's records and the dead letters join its transactions). The producer
	// is ours to close, after Run: the sink only flushes it, and the dead-letter handler uses
	// it to the end of the drain.
	prod, err := src.NewProducer(kafka.ProducerConfig{Overrides: map[string]any{"linger.ms": 5, "log_level": 4}})
	if err != nil {
		src.Close(context.Background())
		return err
	}
	defer prod.Close(context.Background())
	p, err := build(src, prod, log, c.out, c.dlq)
	if err != nil {
		src.Close(context.Background())
		return err
	}

	mon := observe.New(p, observe.WithSource(kprom.New(src, prod)), observe.WithBudget(fit.Budget), observe.WithLogger(log),
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
	st := src.Stats()
	log.Info("drained", "completed", p.Stats().Completed, "commits", st.Commits, "transactions", st.TxnCommits, "aborted", st.TxnAborts, "dead_letters", prod.Stats().DeadLetters)
	if h.drained != nil {
		h.drained(c.brokers)
	}
	return nil
}

// genOrder is the load generator's record i: an order keyed by customer, 1% invalid JSON.
func genOrder(i int64) (key, value []byte) {
	cust := fmt.Sprintf("c-%d", (i*7919)%20000) // 20000 customers, spread
	if i%100 == 99 {
		return []byte(cust), []byte(`{"id": "broken`)
	}
	v, _ := json.Marshal(Order{ID: fmt.Sprintf("o-%d", i), Customer: cust, Amount: float64(i%10000) / 100, Items: int(i%7) + 1})
	return []byte(cust), v
}

// build links the pipeline on src; its sink and dead-letter handler produce through prod.
func build(src *kafka.Source, prod *kafka.Producer, log *slog.Logger, outTopic, dlqTopic string) (*pipeline.Pipeline, error) {
	b := pipeline.New(src, pipeline.WithLogger(log), pipeline.WithName("orders"), pipeline.WithErrorHandler(prod.DeadLetter(dlqTopic)))
	orders := pipeline.Then(b.Source(), stage.Map("decode", decode, stage.WithConcurrency(2)))
	enriched := pipeline.Then(orders, stage.Map("enrich", enrich, stage.WithConcurrency(16), stage.WithTimeout(time.Second)))
	batches := pipeline.Then(enriched, stage.Batch("batch", stage.BatchConfig[Enriched]{MaxCount: 50, Linger: 50 * time.Millisecond}))
	records := pipeline.Then(batches, stage.FlatMap("to-records", func(_ context.Context, batch []Enriched) ([]kafka.Record, error) {
		return toRecords(outTopic, batch)
	}))
	pipeline.To(records, prod.Sink("produce", stage.WithConcurrency(4)))
	return b.Build()
}

// decode parses the event's JSON; an error sends the event to the dead-letter topic.
func decode(_ context.Context, ev *stage.Event) (Order, error) {
	var o Order
	if err := json.Unmarshal(ev.Value, &o); err != nil {
		return Order{}, fmt.Errorf("decode order: %w", err)
	}
	if o.ID == "" {
		return Order{}, fmt.Errorf("decode order: missing id")
	}
	return o, nil
}

// enrich stands for a slow lookup (2–5 ms), honouring cancellation.
func enrich(ctx context.Context, o Order) (Enriched, error) {
	t := time.NewTimer(time.Duration(2000+rand.IntN(3000)) * time.Microsecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return Enriched{}, ctx.Err()
	case <-t.C:
	}
	tier := "standard"
	if o.Amount > 50 {
		tier = "gold"
	}
	return Enriched{Order: o, Tier: tier, EnrichedAt: time.Now().UTC()}, nil
}

func toRecords(topic string, batch []Enriched) ([]kafka.Record, error) {
	recs := make([]kafka.Record, len(batch))
	for i, e := range batch {
		v, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		recs[i] = kafka.Record{Topic: topic, Key: []byte(e.Customer), Value: v}
	}
	return recs, nil
}
