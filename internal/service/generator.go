package service

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// generator produces Load's records to the embedded broker at a steady rate.
type generator struct {
	p     *ckafka.Producer
	topic string
	rate  int
	load  func(i int64) (key, value []byte)
	log   *slog.Logger
	wg    sync.WaitGroup
}

func startGenerator(brokers, topic string, rate int, load func(int64) ([]byte, []byte), log *slog.Logger) (*generator, error) {
	if rate <= 0 {
		rate = 1000
	}
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "linger.ms": 10,
		"go.delivery.reports": false, "log_level": 3, "queue.buffering.max.kbytes": 64 << 10})
	if err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	g := &generator{p: p, topic: topic, rate: rate, load: load, log: log}
	g.wg.Add(1)
	go func() { // errors only (no delivery reports); ends when the producer closes
		defer g.wg.Done()
		for ev := range p.Events() {
			if e, ok := ev.(ckafka.Error); ok {
				log.Debug("load generator", "err", e)
			}
		}
	}()
	return g, nil
}

// run produces rate records per second in 10 ms ticks until ctx is done.
func (g *generator) run(ctx context.Context) {
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	var i int64
	g.log.Info("load generator", "topic", g.topic, "rate", g.rate)
	for {
		select {
		case <-ctx.Done():
			g.log.Info("load generator stopped", "produced", i)
			return
		case now := <-t.C:
			due := int64(now.Sub(start).Seconds() * float64(g.rate))
			for ; i < due && ctx.Err() == nil; i++ {
				k, v := g.load(i)
				m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &g.topic, Partition: ckafka.PartitionAny}, Key: k, Value: v}
				for {
					err := g.p.Produce(m, nil)
					if err == nil {
						break
					}
					if e, ok := err.(ckafka.Error); !ok || e.Code() != ckafka.ErrQueueFull {
						g.log.Warn("load generator", "err", err)
						break
					}
					select { // queue full: wait for deliveries
					case <-ctx.Done():
						return
					case <-time.After(tick):
					}
				}
			}
		}
	}
}

func (g *generator) close() {
	g.p.Flush(2000)
	g.p.Close()
	g.wg.Wait()
}
