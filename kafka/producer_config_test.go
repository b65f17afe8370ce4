package kafka

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

// TestSourceNewProducerInherits: Source.NewProducer takes the brokers, budget, largest message
// and logger the producer's config leaves zero from the source's, so its queue is the source
// plan's ProducerQueue share; a logger of its own is kept.
func TestSourceNewProducerInherits(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, err := NewSource(Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Logger: log,
		Budget: 32 << 20, MaxMessageBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	p, err := src.NewProducer(ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if c := p.cfg; c.Brokers != "127.0.0.1:1" || c.Budget != 32<<20 || c.MaxMessageBytes != 256<<10 || c.Logger != log || c.Topic != "out" {
		t.Fatalf("producer config %+v: want the source's brokers, 32 MiB budget, 256 KiB largest message and logger", c)
	}
	cm, err := producerConfigMap(p.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cm["queue.buffering.max.kbytes"], int(src.Memory().ProducerQueue/1024); got != want {
		t.Fatalf("queue.buffering.max.kbytes = %v, want the source plan's ProducerQueue share %d KiB", got, want)
	}
	own := slog.New(slog.NewTextHandler(io.Discard, nil))
	p2, err := src.NewProducer(ProducerConfig{Logger: own})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close(context.Background())
	if p2.cfg.Logger != own {
		t.Fatal("the producer's own logger was replaced by the source's")
	}
}
