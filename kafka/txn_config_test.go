package kafka_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// wantConfigErr fails t unless err wraps kafka.ErrConfig and pipeline.ErrInvalid and names key.
func wantConfigErr(t *testing.T, err error, key string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one naming %q", key)
	}
	if !errors.Is(err, kafka.ErrConfig) || !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), key) {
		t.Fatalf("error %v: want ErrConfig (wrapping pipeline.ErrInvalid) naming %q", err, key)
	}
}

func eosOK() kafka.Config {
	return kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Logger: kafkatest.Logger(), ExactlyOnce: true, TransactionalID: "tx"}
}

// TestExactlyOnceInvalidConfig: every invalid exactly-once combination fails at construction
// (NewSource, NewProducer, Source.NewProducer or Build) with ErrConfig naming the field.
func TestExactlyOnceInvalidConfig(t *testing.T) {
	sources := []struct {
		name string
		mod  func(c *kafka.Config)
		key  string
	}{
		{"no-transactional-id", func(c *kafka.Config) { c.TransactionalID = "" }, "TransactionalID"},
		{"no-group", func(c *kafka.Config) { c.GroupID = "" }, "GroupID"},
		{"transactional-id-without-exactly-once", func(c *kafka.Config) { c.ExactlyOnce = false }, "TransactionalID"},
		{"read-uncommitted", func(c *kafka.Config) { c.Overrides = map[string]any{"isolation.level": "read_uncommitted"} }, "isolation.level"},
		{"auto-commit", func(c *kafka.Config) { c.Overrides = map[string]any{"enable.auto.commit": true} }, "enable.auto.commit"},
		{"auto-offset-store", func(c *kafka.Config) { c.Overrides = map[string]any{"enable.auto.offset.store": true} }, "enable.auto.offset.store"},
		{"transactional-id-in-overrides", func(c *kafka.Config) { c.Overrides = map[string]any{"transactional.id": "x"} }, "transactional.id"},
	}
	for _, tc := range sources {
		t.Run("source/"+tc.name, func(t *testing.T) {
			c := eosOK()
			tc.mod(&c)
			src, err := kafka.NewSource(c)
			if err == nil {
				_ = src.Close(context.Background())
			}
			wantConfigErr(t, err, tc.key)
		})
	}
	// read_committed stated explicitly is accepted.
	c := eosOK()
	c.Overrides = map[string]any{"isolation.level": "read_committed"}
	if src, err := kafka.NewSource(c); err != nil {
		t.Fatal(err)
	} else {
		_ = src.Close(context.Background())
	}

	producers := []struct {
		name string
		cfg  kafka.ProducerConfig
		key  string
	}{
		{"acks", kafka.ProducerConfig{Overrides: map[string]any{"acks": 1}}, "acks"},
		{"idempotence", kafka.ProducerConfig{Overrides: map[string]any{"enable.idempotence": false}}, "enable.idempotence"},
		{"transactional-id", kafka.ProducerConfig{Overrides: map[string]any{"transactional.id": "x"}}, "transactional.id"},
	}
	for _, tc := range producers {
		t.Run("producer/"+tc.name, func(t *testing.T) {
			src := newSource(t, eosOK())
			defer src.Close(context.Background())
			p, err := src.NewProducer(tc.cfg)
			if err == nil {
				_ = p.Close(context.Background())
			}
			wantConfigErr(t, err, tc.key)
		})
	}
	t.Run("producer/standalone-transactional", func(t *testing.T) {
		p, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: "127.0.0.1:1", Logger: kafkatest.Logger(), Overrides: map[string]any{"transactional.id": "x"}})
		if err == nil {
			_ = p.Close(context.Background())
		}
		wantConfigErr(t, err, "transactional.id")
	})
	t.Run("producer/second", func(t *testing.T) {
		src := newSource(t, eosOK())
		defer src.Close(context.Background())
		p := newTestProducer(t, src)
		p2, err := src.NewProducer(kafka.ProducerConfig{})
		if err == nil {
			_ = p2.Close(context.Background())
		}
		wantConfigErr(t, err, "Source.NewProducer")
		_ = p
	})

	// Build: the pairings of sources and producers.
	build := func(t *testing.T, src *kafka.Source, sink *stage.Stage[kafka.Record, stage.None]) error {
		b := pipeline.New(src)
		pipeline.To(pipeline.Then(b.Source(), copyStage("x", nil)), sink)
		_, err := b.Build()
		return err
	}
	t.Run("build/exactly-once-source-at-least-once-producer", func(t *testing.T) {
		src := newSource(t, eosOK())
		defer src.Close(context.Background())
		p, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: "127.0.0.1:1", Logger: kafkatest.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close(context.Background())
		wantConfigErr(t, build(t, src, p.Sink("produce")), "ExactlyOnce")
	})
	t.Run("build/exactly-once-source-no-kafka-sink", func(t *testing.T) {
		src := newSource(t, eosOK())
		defer src.Close(context.Background())
		b := pipeline.New(src)
		pipeline.To(b.Source(), stage.Sink("discard", func(context.Context, *stage.Event) error { return nil }))
		_, err := b.Build()
		wantConfigErr(t, err, "ExactlyOnce")
	})
	t.Run("build/at-least-once-source-transactional-producer", func(t *testing.T) {
		eos := newSource(t, eosOK())
		defer eos.Close(context.Background())
		p := newTestProducer(t, eos)
		alo := newSource(t, kafka.Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Logger: kafkatest.Logger()})
		defer alo.Close(context.Background())
		wantConfigErr(t, build(t, alo, p.Sink("produce")), "transactional producer")
	})
	t.Run("build/two-pipelines-one-transactional-producer", func(t *testing.T) {
		a := newSource(t, eosOK())
		defer a.Close(context.Background())
		p := newTestProducer(t, a)
		if err := build(t, a, p.Sink("produce")); err != nil {
			t.Fatalf("the producer's own pipeline: %v", err)
		}
		bc := eosOK()
		bc.TransactionalID = "tx-b"
		b := newSource(t, bc)
		defer b.Close(context.Background())
		newTestProducer(t, b) // b has its own, and still uses a's
		wantConfigErr(t, build(t, b, p.Sink("produce")), "transactional producer")
	})
}

func newTestProducer(t *testing.T, src *kafka.Source) *kafka.Producer {
	t.Helper()
	p, err := src.NewProducer(kafka.ProducerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}
