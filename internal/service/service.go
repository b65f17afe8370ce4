package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pipeline/process"
)

// Spec describes a service: its defaults, its embedded topics and load, and its pipeline.
type Spec struct {
	Name     string
	Defaults Defaults
	// Flags, if set, defines the service's own flags (environment fallbacks apply).
	Flags func(*flag.FlagSet)
	// Topics are created on the embedded broker: name → partitions. The input topic must be
	// among them.
	Topics map[string]int
	// Load generates the embedded input: record i's key and value. Nil: no generator.
	Load func(i int64) (key, value []byte)
	// Rate is the load generator's records per second.
	Rate int
	// MaxMessageBytes is the largest record (kafka.Config.MaxMessageBytes). Default 1 MiB.
	MaxMessageBytes int64
	// Build links the pipeline from env.Builder(...) and returns it built.
	Build func(env *Env) (*pipeline.Pipeline, error)
}

// Env is what Spec.Build gets.
type Env struct {
	Config   *Config
	Source   *kafka.Source
	Producer *kafka.Producer // Source.NewProducer's: the service closes it after Run
	Log      *slog.Logger
}

// Options returns the pipeline options matching the source, with the logger and name.
func (e *Env) Options(extra ...pipeline.Option) []pipeline.Option {
	opts := []pipeline.Option{pipeline.WithLogger(e.Log)} // New applies the source's own options first
	return append(opts, extra...)
}

// Hooks let tests observe a run in process. Attach them with WithHooks.
type Hooks struct {
	Listening  func(addr string)    // the HTTP server's bound address
	AfterDrain func(brokers string) // the pipeline returned (final commit done); the broker still runs
}

type hooksKey struct{}

// WithHooks returns ctx carrying h for Run.
func WithHooks(ctx context.Context, h Hooks) context.Context {
	return context.WithValue(ctx, hooksKey{}, h)
}

// Main runs spec with args until ctx is done, the duration elapses or SIGTERM/SIGINT; a
// second signal exits the process at once with status 1. It returns the exit code.
func Main(ctx context.Context, spec Spec, args []string, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("service", spec.Name)
	cfg, err := ParseFlags(spec.Name, args, spec.Defaults, stderr, spec.Flags)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		log.Error("flags", "err", err)
		return 2
	}
	ctx, stop := process.SignalContext(ctx, log)
	defer stop()
	if err := run(ctx, spec, cfg, log); err != nil {
		log.Error("exit", "err", err)
		return 1
	}
	log.Info("exit", "code", 0)
	return 0
}

// sizeProcess sizes the process to its cgroup (process.FitProcess: GOMAXPROCS, GOMEMLIMIT,
// and the budget unless --budget set it), stores the budget in cfg, logs kafka.Plan's split
// of it, and returns the undo.
func sizeProcess(cfg *Config, log *slog.Logger) func() {
	opts := []process.FitOption{process.WithDefaultBudget(cfg.Budget)}
	if cfg.BudgetSet {
		opts = append(opts, process.WithBudget(cfg.Budget))
	}
	fit, undo := process.FitProcess(log, opts...)
	cfg.Budget = fit.Budget
	plan := kafka.Plan(cfg.Budget, kafka.DefaultMaxMessageBytes)
	log.Info("memory plan", "budget", cfg.Budget, "inflight", plan.InFlight, "prefetch", plan.Prefetch, "producer_queue", plan.ProducerQueue)
	return undo
}

func run(ctx context.Context, spec Spec, cfg *Config, log *slog.Logger) (err error) {
	defer sizeProcess(cfg, log)()
	hooks, _ := ctx.Value(hooksKey{}).(Hooks)
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	brokers := cfg.Brokers
	if cfg.Embedded() {
		var opts []kafkatest.Option
		for name, parts := range spec.Topics {
			opts = append(opts, kafkatest.Topic(name, parts))
		}
		cl, err := kafkatest.Start(opts...)
		if err != nil {
			return fmt.Errorf("embedded broker: %w", err)
		}
		defer cl.Close()
		brokers = cl.Addr()
		log.Info("embedded broker", "addr", brokers, "topics", spec.Topics)
		if spec.Load != nil {
			gen, err := startGenerator(brokers, cfg.Topic, spec.Rate, spec.Load, log)
			if err != nil {
				return err
			}
			genCtx, stopGen := context.WithCancel(ctx)
			genDone := make(chan struct{})
			go func() { defer close(genDone); gen.run(genCtx) }()
			defer func() { stopGen(); <-genDone; gen.close() }()
		}
	}
	if !cfg.Security.IsZero() {
		log.Info("kafka security", "security", cfg.Security) // the password is redacted
	}
	src, err := kafka.NewSource(kafka.Config{Brokers: brokers, GroupID: cfg.Group, Topics: []string{cfg.Topic}, Security: cfg.Security,
		Budget: cfg.Budget, MaxMessageBytes: spec.MaxMessageBytes, Ordering: kafka.OrderKey, Logger: log,
		CommitInterval: time.Second, StatsInterval: time.Second,
		Overrides: map[string]any{"auto.offset.reset": "earliest", "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 10, "log_level": 4}})
	if err != nil {
		return err
	}
	// The source's brokers, security, budget, largest message and logger; the producer is ours to close,
	// after Run (the pipeline's sink only flushes it, and a dead-letter handler may use it to
	// the end of the close phase).
	prod, err := src.NewProducer(kafka.ProducerConfig{Overrides: map[string]any{"linger.ms": 5, "log_level": 4}})
	if err != nil {
		src.Close(context.Background())
		return err
	}
	defer prod.Close(context.Background())
	p, err := spec.Build(&Env{Config: cfg, Source: src, Producer: prod, Log: log})
	if err != nil {
		src.Close(context.Background())
		return err
	}
	mon := newMonitor(p, src, prod, cfg.Budget)
	srv, err := startHTTP(cfg.HTTP, mon, log)
	if err != nil {
		src.Close(context.Background())
		return err
	}
	defer srv.close()
	if hooks.Listening != nil {
		hooks.Listening(srv.addr)
	}
	monCtx, stopMon := context.WithCancel(context.Background())
	monDone := make(chan struct{})
	go func() { defer close(monDone); mon.run(monCtx, log) }()
	defer func() { stopMon(); <-monDone }()

	log.Info("running", "topic", cfg.Topic, "group", cfg.Group, "duration", cfg.Duration)
	if err := p.Run(ctx); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	snap := p.Stats()
	st := src.Stats()
	log.Info("drained", "emitted", snap.Emitted, "completed", snap.Completed, "failed", snap.Failed,
		"commits", st.Commits, "dlq", prod.Stats().DeadLetters)
	if hooks.AfterDrain != nil {
		hooks.AfterDrain(brokers)
	}
	return nil
}
