package kafkatest_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCtx returns a context that ends well before the test binary's timeout.
func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// cfg builds a librdkafka config: the base settings, then extra key/value
// pairs. It drops librdkafka's log level to notice: at info it logs a
// telemetry line per client.
func cfg(t testing.TB, base kafka.ConfigMap, extra ...string) *kafka.ConfigMap {
	t.Helper()
	if len(extra)%2 != 0 {
		t.Fatalf("odd config list %q", extra)
	}
	m := kafka.ConfigMap{"log_level": 5}
	maps.Copy(m, base)
	for i := 0; i < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return &m
}

// newProducer returns an idempotent, acks=all librdkafka producer on addr,
// closed at cleanup.
func newProducer(t testing.TB, addr string, extra ...string) *kafka.Producer {
	t.Helper()
	p, err := kafka.NewProducer(cfg(t, kafka.ConfigMap{
		"bootstrap.servers":  addr,
		"enable.idempotence": true,
		"acks":               "all",
		"linger.ms":          5,
		"message.timeout.ms": 20000,
	}, extra...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// produce sends n records with unique values "<prefix>-<i>" to topic and
// waits for every delivery report; it returns the set of values.
func produce(ctx context.Context, t testing.TB, p *kafka.Producer, topic, prefix string, n int) map[string]bool {
	t.Helper()
	reports := make(chan kafka.Event, n)
	sent := make(map[string]bool, n)
	for i := range n {
		v := fmt.Sprintf("%s-%d", prefix, i)
		sent[v] = true
		err := p.Produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny},
			Key:            []byte(v),
			Value:          []byte(v),
		}, reports)
		if err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	for i := range n {
		select {
		case ev := <-reports:
			m, ok := ev.(*kafka.Message)
			if !ok {
				t.Fatalf("unexpected delivery event %T: %v", ev, ev)
			}
			if m.TopicPartition.Error != nil {
				t.Fatalf("delivery of %s: %v", m.Value, m.TopicPartition.Error)
			}
		case <-ctx.Done():
			t.Fatalf("waiting for delivery report %d of %d: %v", i, n, ctx.Err())
		}
	}
	return sent
}

// newConsumer returns a librdkafka consumer in group on addr with manual
// offset storing and committing, closed at cleanup.
func newConsumer(t testing.TB, addr, group string, extra ...string) *kafka.Consumer {
	t.Helper()
	c, err := kafka.NewConsumer(cfg(t, kafka.ConfigMap{
		"bootstrap.servers":        addr,
		"group.id":                 group,
		"auto.offset.reset":        "earliest",
		"enable.auto.commit":       false,
		"enable.auto.offset.store": false,
	}, extra...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.IsClosed() {
			return
		}
		if err := c.Close(); err != nil {
			t.Errorf("closing consumer: %v", err)
		}
	})
	return c
}

// consume polls c until it has seen every value in want, storing each
// message's offset and committing every 100 messages and at the end. It fails
// on values outside want. It returns how many messages it received, counting
// redeliveries.
func consume(ctx context.Context, t testing.TB, c *kafka.Consumer, want map[string]bool) int {
	t.Helper()
	seen := make(map[string]bool, len(want))
	received := 0
	for len(seen) < len(want) {
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d distinct values: %v", len(seen), len(want), ctx.Err())
		}
		switch ev := c.Poll(100).(type) {
		case nil:
		case *kafka.Message:
			if ev.TopicPartition.Error != nil {
				t.Fatalf("consume: %v", ev.TopicPartition.Error)
			}
			v := string(ev.Value)
			if !want[v] {
				t.Fatalf("unexpected value %q at %v", v, ev.TopicPartition)
			}
			seen[v] = true
			received++
			if _, err := c.StoreMessage(ev); err != nil {
				t.Fatalf("store offset: %v", err)
			}
			if received%100 == 0 {
				commit(t, c)
			}
		case kafka.Error:
			if ev.IsFatal() {
				t.Fatalf("fatal consumer error: %v", ev)
			}
			t.Logf("consumer error (non-fatal): %v", ev)
		default:
			t.Logf("consumer event: %v", ev)
		}
	}
	commit(t, c)
	return received
}

func commit(t testing.TB, c *kafka.Consumer) {
	t.Helper()
	_, err := c.Commit()
	var kerr kafka.Error
	if errors.As(err, &kerr) && kerr.Code() == kafka.ErrNoOffset {
		return // nothing stored since the last commit
	}
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// watermarker is a librdkafka handle that can query watermarks. Query them
// through a handle that is not fetching: a consumer's fetch long-polls for
// fetch.wait.max.ms (500 ms) and the broker answers one request per
// connection at a time, so each query from a busy consumer takes ~500 ms.
type watermarker interface {
	QueryWatermarkOffsets(string, int32, int) (int64, int64, error)
}

// checkCommitted checks that group's committed offset on every partition of
// topic equals the partition's high watermark, queried through wm.
func checkCommitted(t testing.TB, c *kafka.Consumer, wm watermarker, topic string, partitions int) {
	t.Helper()
	var tps []kafka.TopicPartition
	for p := range partitions {
		tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: int32(p)})
	}
	got, err := c.Committed(tps, 10000)
	if err != nil {
		t.Fatalf("committed: %v", err)
	}
	for _, tp := range got {
		_, high, err := wm.QueryWatermarkOffsets(topic, tp.Partition, 10000)
		if err != nil {
			t.Fatalf("watermarks: %v", err)
		}
		if int64(tp.Offset) != high {
			t.Errorf("%s[%d]: committed %v, high watermark %d", topic, tp.Partition, tp.Offset, high)
		}
	}
}

// watermarks returns the low and high watermark of every partition of topic.
func watermarks(t testing.TB, h watermarker, topic string, partitions int) (lows, highs []int64) {
	t.Helper()
	for p := range partitions {
		lo, hi, err := h.QueryWatermarkOffsets(topic, int32(p), 10000)
		if err != nil {
			t.Fatalf("watermarks %s[%d]: %v", topic, p, err)
		}
		lows, highs = append(lows, lo), append(highs, hi)
	}
	return lows, highs
}

func sum(xs []int64) (s int64) {
	for _, x := range xs {
		s += x
	}
	return s
}
