package kafka_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

func TestFaultInvalidConfigMatrix(t *testing.T) {
	ok := func() kafka.Config {
		return kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Logger: kafkatest.Logger()}
	}
	cases := []struct {
		name string
		mod  func(c *kafka.Config)
		key  string
	}{
		{"brokers", func(c *kafka.Config) { c.Brokers = " " }, "Brokers"},
		{"group", func(c *kafka.Config) { c.GroupID = "" }, "GroupID"},
		{"topics", func(c *kafka.Config) { c.Topics = nil }, "Topics"},
		{"budget", func(c *kafka.Config) { c.Budget, c.MaxMessageBytes = 3<<20, 1<<20 }, "Budget"},
		{"auto-offset-store", func(c *kafka.Config) { c.Overrides = map[string]any{"enable.auto.offset.store": true} }, "enable.auto.offset.store"},
		{"auto-commit", func(c *kafka.Config) { c.Overrides = map[string]any{"enable.auto.commit": "true"} }, "enable.auto.commit"},
		{"auto-commit-as-1", func(c *kafka.Config) { c.Overrides = map[string]any{"enable.auto.commit": 1} }, "enable.auto.commit"},
		{"auto-commit-as-T", func(c *kafka.Config) { c.Overrides = map[string]any{"enable.auto.commit": "True"} }, "enable.auto.commit"},
		{"group-in-overrides", func(c *kafka.Config) { c.Overrides = map[string]any{"group.id": "x"} }, "group.id"},
		{"unknown-property", func(c *kafka.Config) { c.Overrides = map[string]any{"no.such.property": 1} }, "no.such.property"},
		{"ordering", func(c *kafka.Config) { c.Ordering = kafka.Ordering(9) }, "Ordering"},
		{"instance-id-chars", func(c *kafka.Config) { c.GroupInstanceID = "pod 1" }, "GroupInstanceID"},
		{"instance-id-long", func(c *kafka.Config) { c.GroupInstanceID = strings.Repeat("p", 250) }, "GroupInstanceID"},
		{"instance-id-in-overrides", func(c *kafka.Config) { c.Overrides = map[string]any{"group.instance.id": "x"} }, "group.instance.id"},
		{"metadata-cap", func(c *kafka.Config) { c.CommitMetadataMaxBytes = 10 }, "CommitMetadataMaxBytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.mod(&c)
			src, err := kafka.NewSource(c)
			if err == nil {
				_ = src.Close(context.Background())
				t.Fatal("no error")
			}
			if src != nil {
				t.Fatal("a source was returned with an error")
			}
			if !errors.Is(err, kafka.ErrConfig) || !errors.Is(err, pipeline.ErrInvalid) {
				t.Fatalf("error does not wrap ErrConfig and pipeline.ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error does not name %q: %v", tc.key, err)
			}
		})
	}
	// All problems at once are all reported.
	_, err := kafka.NewSource(kafka.Config{})
	for _, key := range []string{"Brokers", "GroupID", "Topics"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Fatalf("joined error does not name %s: %v", key, err)
		}
	}
}

func TestFaultInvalidProducerConfigMatrix(t *testing.T) {
	cases := []struct {
		name string
		cfg  kafka.ProducerConfig
		key  string
	}{
		{"brokers", kafka.ProducerConfig{}, "Brokers"},
		{"acks", kafka.ProducerConfig{Brokers: "127.0.0.1:1", Overrides: map[string]any{"acks": 1}}, "acks"},
		{"acks-alias", kafka.ProducerConfig{Brokers: "127.0.0.1:1", Overrides: map[string]any{"request.required.acks": "1"}}, "request.required.acks"},
		{"idempotence", kafka.ProducerConfig{Brokers: "127.0.0.1:1", Overrides: map[string]any{"enable.idempotence": false}}, "enable.idempotence"},
		{"budget", kafka.ProducerConfig{Brokers: "127.0.0.1:1", Budget: 1 << 20, MaxMessageBytes: 1 << 20}, "Budget"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = kafkatest.Logger()
			p, err := kafka.NewProducer(tc.cfg)
			if err == nil {
				_ = p.Close(context.Background())
				t.Fatal("no error")
			}
			if p != nil || !errors.Is(err, kafka.ErrConfig) || !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("producer %v, error %v: want ErrConfig (wrapping pipeline.ErrInvalid) naming %q", p, err, tc.key)
			}
		})
	}
	// acks=all spelled as -1 and idempotence as 1 are accepted.
	p, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: "127.0.0.1:1", Logger: kafkatest.Logger(), Overrides: map[string]any{"acks": -1, "enable.idempotence": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestErrConfigIsErrInvalid: kafka's configuration errors are construction errors like the
// pipeline's: one errors.Is(err, pipeline.ErrInvalid) catches both.
func TestErrConfigIsErrInvalid(t *testing.T) {
	if !errors.Is(kafka.ErrConfig, pipeline.ErrInvalid) {
		t.Fatalf("kafka.ErrConfig (%v) does not wrap pipeline.ErrInvalid", kafka.ErrConfig)
	}
	_, err := kafka.NewSource(kafka.Config{})
	if !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("NewSource(Config{}) = %v, want an error wrapping pipeline.ErrInvalid", err)
	}
}

// TestSourceNewProducerConflicts: a producer made by Source.NewProducer takes the source's
// brokers, budget and largest message; one that states another value fails with ErrConfig
// (and pipeline.ErrInvalid) naming the field and the source's value, and no producer is made.
func TestSourceNewProducerConflicts(t *testing.T) {
	src := newSource(t, kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Logger: kafkatest.Logger(),
		Budget: 32 << 20, MaxMessageBytes: 256 << 10})
	defer src.Close(context.Background())
	for _, tc := range []struct {
		name string
		cfg  kafka.ProducerConfig
		want []string
	}{
		{"budget", kafka.ProducerConfig{Budget: 64 << 20}, []string{"ProducerConfig.Budget", "32 MiB", "64 MiB"}},
		{"max message", kafka.ProducerConfig{MaxMessageBytes: 1 << 20}, []string{"ProducerConfig.MaxMessageBytes", "256 KiB", "1 MiB"}},
		{"brokers", kafka.ProducerConfig{Brokers: "127.0.0.1:2"}, []string{"ProducerConfig.Brokers", "127.0.0.1:1", "127.0.0.1:2"}},
		{"all three", kafka.ProducerConfig{Brokers: "127.0.0.1:2", Budget: 8 << 20, MaxMessageBytes: 1000},
			[]string{"ProducerConfig.Brokers", "ProducerConfig.Budget", "ProducerConfig.MaxMessageBytes", "1000 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := src.NewProducer(tc.cfg)
			if err == nil {
				_ = p.Close(context.Background())
				t.Fatal("no error")
			}
			if p != nil || !errors.Is(err, kafka.ErrConfig) || !errors.Is(err, pipeline.ErrInvalid) {
				t.Fatalf("producer %v, error %v: want ErrConfig wrapping pipeline.ErrInvalid", p, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	// The source's own values, stated again, agree with it.
	p, err := src.NewProducer(kafka.ProducerConfig{Brokers: "127.0.0.1:1", Budget: 32 << 20, MaxMessageBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryPlan: Plan follows the documented formula and Source.Memory reports overrides;
// the pipeline options carry the in-flight share.
func TestMemoryPlan(t *testing.T) {
	for _, tc := range []struct {
		budget, maxMsg int64
		want           kafka.Memory
	}{
		{16 << 20, 1 << 20, kafka.Memory{Budget: 16 << 20, InFlight: 8 << 20, Held: 1 << 20, HeldMax: 1<<20 + 256<<10 + 1<<20 + pipeline.EventOverhead,
			Prefetch: 3 << 20, FetchMaxBytes: 2 << 20, PartitionFetchBytes: 1 << 20, ProducerQueue: 4 << 20, PerPartition: 4096 * 196}},
		{4 << 20, 256 << 10, kafka.Memory{Budget: 4 << 20, InFlight: 2 << 20, Held: 256 << 10, HeldMax: 256<<10 + 256<<10 + 256<<10 + pipeline.EventOverhead,
			Prefetch: 768 << 10, FetchMaxBytes: 512 << 10, PartitionFetchBytes: 512 << 10, ProducerQueue: 1 << 20, PerPartition: 4096 * 196}},
		{4 << 20, 1 << 20, kafka.Memory{Budget: 4 << 20, InFlight: 2 << 20, Held: 256 << 10, HeldMax: 256<<10 + 256<<10 + 1<<20 + pipeline.EventOverhead,
			Prefetch: 768 << 10, FetchMaxBytes: 1 << 20, PartitionFetchBytes: 1 << 20, ProducerQueue: 1 << 20, PerPartition: 4096 * 196}},
		{1 << 30, 1 << 20, kafka.Memory{Budget: 1 << 30, InFlight: 512 << 20, Held: 64 << 20, HeldMax: 64<<20 + 256<<10 + 1<<20 + pipeline.EventOverhead,
			Prefetch: 6 << 20, FetchMaxBytes: 4 << 20, PartitionFetchBytes: 1 << 20, ProducerQueue: 256 << 20, PerPartition: 4096 * 196}},
		// The default budget: librdkafka's share stops at the fetch ceiling (4 MiB responses,
		// 6 MiB prefetch) instead of growing with the budget.
		{64 << 20, 1 << 20, kafka.Memory{Budget: 64 << 20, InFlight: 32 << 20, Held: 4 << 20, HeldMax: 4<<20 + 256<<10 + 1<<20 + pipeline.EventOverhead,
			Prefetch: 6 << 20, FetchMaxBytes: 4 << 20, PartitionFetchBytes: 1 << 20, ProducerQueue: 16 << 20, PerPartition: 4096 * 196}},
		// A record above the ceiling still raises the fetch size to it.
		{256 << 20, 16 << 20, kafka.Memory{Budget: 256 << 20, InFlight: 128 << 20, Held: 16 << 20, HeldMax: 16<<20 + 256<<10 + 16<<20 + pipeline.EventOverhead,
			Prefetch: 24 << 20, FetchMaxBytes: 16 << 20, PartitionFetchBytes: 1 << 20, ProducerQueue: 64 << 20, PerPartition: 4096 * 196}},
	} {
		got := kafka.Plan(tc.budget, tc.maxMsg)
		if got != tc.want {
			t.Errorf("Plan(%d, %d) = %+v, want %+v", tc.budget, tc.maxMsg, got, tc.want)
		}
		if sum := got.InFlight + got.Held + got.Prefetch + got.ProducerQueue; sum > tc.budget {
			t.Errorf("Plan(%d, %d): in flight + held + prefetch + producer queue = %d, above the budget", tc.budget, tc.maxMsg, sum)
		}
		if got.Prefetch < got.FetchMaxBytes && got.Prefetch < 3*tc.budget/16 {
			t.Errorf("Plan(%d, %d): prefetch %d below one fetch response %d", tc.budget, tc.maxMsg, got.Prefetch, got.FetchMaxBytes)
		}
		if h, want := got.GoHeap(3), (got.InFlight+got.HeldMax)*5/4+3*got.PerPartition; h != want {
			t.Errorf("Plan(%d, %d).GoHeap(3) = %d, want %d", tc.budget, tc.maxMsg, h, want)
		}
	}
	cfg := kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Logger: kafkatest.Logger(), Budget: 32 << 20, MaxMessageBytes: 1 << 20,
		Overrides: map[string]any{"fetch.max.bytes": 3 << 20, "queued.max.messages.kbytes": 1024}, MaxInFlightPerPartition: 100, Ordering: kafka.OrderNone}
	src := newSource(t, cfg)
	defer src.Close(context.Background())
	mem := src.Memory()
	want := kafka.Plan(32<<20, 1<<20)
	want.FetchMaxBytes, want.Prefetch, want.PerPartition = 3<<20, 1<<20, 100*36 // no key table under OrderNone
	if mem != want {
		t.Fatalf("Memory() = %+v, want %+v", mem, want)
	}
	b := pipeline.New(src, src.PipelineOptions()...)
	pipeline.To(b.Source(), stage.Sink("discard", func(context.Context, *stage.Event) error { return nil }))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().BudgetBytes; got != mem.InFlight {
		t.Fatalf("pipeline budget %d, want InFlight %d", got, mem.InFlight)
	}
}

// TestLibraryDoesNotImportKfake: the embedded broker stays a test dependency.
func TestLibraryDoesNotImportKfake(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps",
		"github.com/sluicehq/sluice/kafka", "github.com/sluicehq/sluice/pipeline",
		"github.com/sluicehq/sluice/stage", "github.com/sluicehq/sluice/pool").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "github.com/confluentinc/confluent-kafka-go") {
		t.Fatalf("go list output looks wrong:\n%s", out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "kfake") || strings.Contains(line, "kafkatest") {
			t.Errorf("library dependency on the test broker: %s", line)
		}
	}
}

// TestForwardLogsStartsTheLogPoller: librdkafka's log lines are forwarded to slog only with
// ForwardLogs, because confluent-kafka-go's log poller blocks in librdkafka holding a Go P
// (on one CPU it stalled the consumer): without the option no such goroutine exists.
func TestForwardLogsStartsTheLogPoller(t *testing.T) {
	for _, forward := range []bool{false, true} {
		src, err := kafka.NewSource(kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"},
			Logger: kafkatest.Logger(), ForwardLogs: forward})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if polls := strings.Contains(stacks, "setupLogQueue"); polls != forward { // its goroutine, running or not yet
			t.Errorf("ForwardLogs %v: log poller goroutine running = %v", forward, polls)
		}
		if err := src.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPipelineTakesTheSourceBudget: pipeline.New applies the source's own options (its
// in-flight share of the budget and its largest message), so a pipeline built without them
// runs on the source's plan; an explicit option still wins.
func TestPipelineTakesTheSourceBudget(t *testing.T) {
	src, err := kafka.NewSource(kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Budget: 24 << 20, Logger: kafkatest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	sink := func() *stage.Stage[*stage.Event, stage.None] {
		return stage.Sink("s", func(context.Context, *stage.Event) error { return nil })
	}
	b := pipeline.New(src)
	pipeline.To(b.Source(), sink())
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Stats().BudgetBytes, src.Memory().InFlight; got != want {
		t.Fatalf("pipeline budget %d, want the source's in-flight share %d", got, want)
	}
	b = pipeline.New(src, pipeline.WithBudget(5<<20))
	pipeline.To(b.Source(), sink())
	if p, err = b.Build(); err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().BudgetBytes; got != 5<<20 {
		t.Fatalf("pipeline budget %d, want the explicit 5 MiB", got)
	}
}
