package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline/observe/observetest"
)

// TestExactlyOnceOrdersExample runs the service with --exactly-once on the embedded broker
// while its load generator writes, drains it, and then compares, with the broker still up,
// every input below the group's committed offsets with what a read_committed reader sees:
// each valid order's enriched record exactly once (same multiset of order ids), each invalid
// one exactly one dead letter, and nothing else. The output topic holds transaction markers
// (its high watermarks exceed its records): the writes were transactional.
func TestExactlyOnceOrdersExample(t *testing.T) {
	checked := make(chan error, 1)
	base, cancel, code := start(t, func(brokers string) { checked <- checkExactlyOnce(brokers) },
		"--exactly-once", "--transactional-id", "orders-test-0")
	observetest.WaitReady(t, base, 30*time.Second)
	ctx, stop := context.WithTimeout(context.Background(), 60*time.Second)
	defer stop()
	// Run until a few thousand orders (and so some invalid ones) were committed.
	err := observetest.Eventually(ctx, 250*time.Millisecond, func() error {
		mfs, err := observetest.Scrape(ctx, base+"/metrics")
		if err != nil {
			return err
		}
		if v, _ := observetest.Value(mfs, "sluice_events_completed_total"); v < 3000 {
			return fmt.Errorf("%v orders completed", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitExit(t, cancel, code)
	if err := <-checked; err != nil {
		t.Fatal(err)
	}
}

// checkExactlyOnce compares the inputs below the committed offsets with the committed output
// and dead letters (see TestExactlyOnceOrdersExample).
func checkExactlyOnce(brokers string) error {
	committed, err := kafkatest.Committed(brokers, "orders-enricher", "orders", 8)
	if err != nil {
		return err
	}
	want, invalid, inputs := map[string]int{}, 0, 0
	in, err := readPartitions(brokers, "orders", committed)
	if err != nil {
		return err
	}
	for _, m := range in {
		inputs++
		var o Order
		if json.Unmarshal(m.Value, &o) != nil || o.ID == "" {
			invalid++
			continue
		}
		want[o.ID]++
	}
	if inputs < 3000 || invalid == 0 {
		return fmt.Errorf("committed %d inputs (%d invalid): too few to check", inputs, invalid)
	}
	out, err := readCommitted(brokers, "orders-enriched", inputs-invalid)
	if err != nil {
		return err
	}
	got := map[string]int{}
	for _, m := range out {
		var e Enriched
		if err := json.Unmarshal(m.Value, &e); err != nil {
			return fmt.Errorf("output %v: %w", m.TopicPartition, err)
		}
		got[e.ID]++
	}
	var diffs []string
	for id, n := range want {
		if got[id] != n {
			diffs = append(diffs, fmt.Sprintf("%s: input %d, output %d", id, n, got[id]))
		}
	}
	for id, n := range got {
		if want[id] == 0 {
			diffs = append(diffs, fmt.Sprintf("%s: output %d of an uncommitted or unknown input", id, n))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%d of %d order ids differ, e.g. %s", len(diffs), len(want), strings.Join(diffs[:min(len(diffs), 5)], "; "))
	}
	dlq, err := readCommitted(brokers, "orders-dlq", invalid)
	if err != nil {
		return err
	}
	if len(dlq) != invalid {
		return fmt.Errorf("%d dead letters, want %d (one per invalid input)", len(dlq), invalid)
	}
	markers, err := hwmSum(brokers, "orders-enriched", 8)
	if err != nil {
		return err
	}
	if markers <= int64(len(out)) {
		return fmt.Errorf("orders-enriched: high watermarks sum to %d for %d records: no transaction markers", markers, len(out))
	}
	return nil
}

// readPartitions reads topic's partitions from offset 0 up to (not including) upTo[p].
func readPartitions(brokers, topic string, upTo []int64) ([]*ckafka.Message, error) {
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "orders-test-inputs", "enable.auto.commit": false, "log_level": 3})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var tps []ckafka.TopicPartition
	left := 0
	for p, off := range upTo {
		if off > 0 {
			tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: int32(p), Offset: 0})
			left++
		}
	}
	if err := c.Assign(tps); err != nil {
		return nil, err
	}
	var out []*ckafka.Message
	for end := time.Now().Add(30 * time.Second); left > 0; {
		if time.Now().After(end) {
			return nil, fmt.Errorf("%s: %d partitions not read up to their committed offsets in 30s", topic, left)
		}
		m, ok := c.Poll(100).(*ckafka.Message)
		if !ok || m.TopicPartition.Error != nil {
			continue
		}
		off, p := int64(m.TopicPartition.Offset), m.TopicPartition.Partition
		if off < upTo[p] {
			out = append(out, m)
		}
		if off == upTo[p]-1 {
			left--
		}
	}
	return out, nil
}

// readCommitted reads topic from the beginning with a read_committed consumer until at least n
// records arrived and then nothing more for a second (a duplicate would come too), at most 30 s.
func readCommitted(brokers, topic string, n int) ([]*ckafka.Message, error) {
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "orders-test-" + topic, "auto.offset.reset": "earliest",
		"enable.auto.commit": false, "isolation.level": "read_committed", "fetch.wait.max.ms": 50, "log_level": 3})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Subscribe(topic, nil); err != nil {
		return nil, err
	}
	var out []*ckafka.Message
	last := time.Now()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && (len(out) < n || time.Since(last) < time.Second); {
		if m, ok := c.Poll(100).(*ckafka.Message); ok && m.TopicPartition.Error == nil {
			out = append(out, m)
			last = time.Now()
		}
	}
	return out, nil
}

// hwmSum is the sum of topic's high watermarks.
func hwmSum(brokers, topic string, parts int) (int64, error) {
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "orders-test-watermarks", "log_level": 3})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var sum int64
	for p := range parts {
		_, hi, err := c.QueryWatermarkOffsets(topic, int32(p), 5000)
		if err != nil {
			return 0, err
		}
		sum += hi
	}
	return sum, nil
}

// TestExactlyOnceOrdersFlags: --transactional-id without --exactly-once is a flag error (exit
// 2, before anything starts), and the id defaults to the group with the instance id, else
// with the host name.
func TestExactlyOnceOrdersFlags(t *testing.T) {
	var logs syncBuffer
	if c := run(context.Background(), []string{"--transactional-id", "x"}, &logs, hooks{}); c != 2 || !strings.Contains(logs.String(), "without --exactly-once") {
		t.Fatalf("--transactional-id alone: exit %d, want 2 naming --exactly-once; logs:\n%s", c, logs.String())
	}
	c := config{group: "g", exactlyOnce: true, instanceID: "pod-1"}
	if err := c.transactionalID(); err != nil || c.txnID != "g-pod-1" {
		t.Fatalf("with an instance id: %q, %v; want g-pod-1", c.txnID, err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	c = config{group: "g", exactlyOnce: true}
	if err := c.transactionalID(); err != nil || c.txnID != "g-"+host {
		t.Fatalf("default: %q, %v; want g-%s", c.txnID, err, host)
	}
	c = config{group: "g", exactlyOnce: true, instanceID: "pod-1", txnID: "mine"}
	if err := c.transactionalID(); err != nil || c.txnID != "mine" {
		t.Fatalf("given: %q, %v; want mine", c.txnID, err)
	}
}
