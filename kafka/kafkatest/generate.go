package kafkatest

import (
	"context"
	"fmt"
	"sync"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// generateTick is how often Generate hands the records that fell due to its producer.
const generateTick = 10 * time.Millisecond

// Generate produces record(0), record(1), ... to topic at rate records per second (default
// 1000 when rate <= 0), in 10 ms steps, until ctx is done; then it flushes what its producer
// still holds (5 s at most), closes it and returns the number of records it handed to the
// producer. It is the load of an example service run on the embedded broker, and of tests
// that need a steady stream.
//
// Records are spread over the partitions by key (librdkafka's default partitioner; a nil key
// spreads them at random). The producer is librdkafka's, without delivery reports, with
// linger.ms=10, a 64 MiB queue and small Go channels; when the queue is full Generate waits (its rate then
// drops to what the broker takes). It blocks until ctx is done. A cancelled ctx is the normal
// end and gives a nil error; an error means the producer could not be created or refused a
// record for a reason other than a full queue (the records before it were produced).
func Generate(ctx context.Context, brokers, topic string, rate int, record func(i int64) (key, value []byte)) (int64, error) {
	if rate <= 0 {
		rate = 1000
	}
	// confluent-kafka-go's channels default to a million entries (24 MiB of Go heap, live for
	// the producer's life); without delivery reports and without ProduceChannel a thousand do.
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "linger.ms": 10,
		"go.delivery.reports": false, "log_level": 3, "queue.buffering.max.kbytes": 64 << 10,
		"go.events.channel.size": 1000, "go.produce.channel.size": 1000})
	if err != nil {
		return 0, fmt.Errorf("kafkatest: generate to %s: %w", topic, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // drains the error events (no delivery reports); ends when the producer closes
		defer wg.Done()
		for range p.Events() {
		}
	}()
	defer func() {
		p.Flush(5000)
		p.Close()
		wg.Wait()
	}()

	t := time.NewTicker(generateTick)
	defer t.Stop()
	start := time.Now()
	var i int64
	for {
		select {
		case <-ctx.Done():
			return i, nil
		case now := <-t.C:
			due := int64(now.Sub(start).Seconds() * float64(rate))
			for ; i < due; i++ {
				k, v := record(i)
				m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny}, Key: k, Value: v}
				for {
					err := p.Produce(m, nil)
					if err == nil {
						break
					}
					if e, ok := err.(ckafka.Error); !ok || e.Code() != ckafka.ErrQueueFull {
						return i, fmt.Errorf("kafkatest: generate to %s: record %d: %w", topic, i, err)
					}
					select { // queue full: give the producer a tick to deliver
					case <-ctx.Done():
						return i, nil
					case <-t.C:
					}
				}
			}
		}
	}
}
