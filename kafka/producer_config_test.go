package kafka

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

// TestSourceNewProducerInherits: Source.NewProducer takes the brokers, budget, largest message
// and logger the producer's config leaves zero from the source's, so its queue is the source
// plan's ProducerQueue share (below the cap at 6 × message.max.bytes here); a logger of its own
// is kept.
func TestSourceNewProducerInherits(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, err := NewSource(Config{Brokers: "127.0.0.1:1", GroupID: "g", Topics: []string{"t"}, Logger: log,
		Budget: 16 << 20, MaxMessageBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	p, err := src.NewProducer(ProducerConfig{Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if c := p.cfg; c.Brokers != "127.0.0.1:1" || c.Budget != 16<<20 || c.MaxMessageBytes != 256<<10 || c.Logger != log || c.Topic != "out" {
		t.Fatalf("producer config %+v: want the source's brokers, 16 MiB budget, 256 KiB largest message and logger", c)
	}
	cm, err := producerConfigMap(p.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cm["queue.buffering.max.kbytes"], int(src.Memory().ProducerQueue/1024); got != want {
		t.Fatalf("queue.buffering.max.kbytes = %v, want the source plan's ProducerQueue share %d KiB", got, want)
	}
	// 16 MiB budgets 4 MiB to the producer: below the cap (6 × 1,000,000 bytes), so the share.
	if src.Memory().ProducerQueue != 4<<20 {
		t.Fatalf("the plan's ProducerQueue is %d, want 4 MiB (the test needs a share below the cap)", src.Memory().ProducerQueue)
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

// TestProducerQueueCap: a producer's queue is the budget's share up to what keeps one broker
// busy, 6 × message.max.bytes (five requests awaiting their response, one being filled).
func TestProducerQueueCap(t *testing.T) {
	for _, c := range []struct {
		budget, maxMessage int64
		want               int // KiB
	}{
		{64 << 20, 1 << 20, 6 * (1<<20 + 64<<10) / 1024},  // share 16 MiB, capped at 6.375 MiB
		{16 << 20, 1 << 20, 4 << 10},                      // share 4 MiB, below the cap
		{256 << 20, 8 << 20, 6 * (8<<20 + 64<<10) / 1024}, // share 64 MiB, capped at 6 × (8 MiB + 64 KiB)
		{1 << 30, 64 << 20, 256 << 10},                    // share 256 MiB, below 6 × 64 MiB
	} {
		cm, err := producerConfigMap(ProducerConfig{Brokers: "127.0.0.1:1", Budget: c.budget, MaxMessageBytes: c.maxMessage}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := cm["queue.buffering.max.kbytes"]; got != c.want {
			t.Errorf("budget %d MiB, largest message %d KiB: queue.buffering.max.kbytes = %v, want %d", c.budget>>20, c.maxMessage>>10, got, c.want)
		}
	}
}
