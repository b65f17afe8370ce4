package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline/observe/observetest"
)

// TestExactlyOnceOrders runs the service with --exactly-once on the embedded broker and its
// load for a few seconds: after the drain, a read_committed reader finds every committed
// order once, in the output or (invalid JSON) in the dead-letter topic, and no order twice.
func TestExactlyOnceOrders(t *testing.T) {
	type counts struct {
		committed, out, dlq, end int64
		dup                      string
	}
	got := make(chan counts, 1)
	base, cancel, code := start(t, func(brokers string) {
		var c counts
		var err error
		if c.committed, err = kafkatest.CommittedSum(brokers, "orders-enricher", "orders", 8); err != nil {
			t.Errorf("committed: %v", err)
		}
		rc := map[string]any{"bootstrap.servers": brokers, "isolation.level": "read_committed"}
		outs, err := kafkatest.ReadMessagesWith(rc, "orders-enriched", int(c.committed)+1, 5*time.Second)
		if err != nil {
			t.Errorf("read output: %v", err)
		}
		seen := map[string]bool{}
		for _, m := range outs {
			var e Enriched
			if err := json.Unmarshal(m.Value, &e); err != nil {
				t.Errorf("output %q: %v", m.Value, err)
			}
			if seen[e.ID] && c.dup == "" {
				c.dup = e.ID
			}
			seen[e.ID] = true
		}
		dlq, err := kafkatest.ReadMessagesWith(rc, "orders-dlq", int(c.committed)+1, 3*time.Second)
		if err != nil {
			t.Errorf("read dead letters: %v", err)
		}
		c.out, c.dlq = int64(len(outs)), int64(len(dlq))
		cons, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "watermarks", "log_level": 3})
		if err != nil {
			t.Error(err)
		} else {
			for p := range int32(8) {
				_, hi, err := cons.QueryWatermarkOffsets("orders-enriched", p, 5000)
				if err != nil {
					t.Error(err)
				}
				c.end += hi
			}
			cons.Close()
		}
		got <- c
	}, "--exactly-once")
	observetest.WaitReady(t, base, 30*time.Second)
	ctx, stop := context.WithTimeout(context.Background(), 60*time.Second)
	defer stop()
	err := observetest.Eventually(ctx, 250*time.Millisecond, func() error { // the load runs: a transaction commits every second
		mfs, err := observetest.Scrape(ctx, base+"/metrics")
		if err != nil {
			return err
		}
		if v, ok := observetest.Value(mfs, "sluice_commits_total"); !ok || v < 3 {
			return fmt.Errorf("sluice_commits_total = %v", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitExit(t, cancel, code)
	c := <-got
	if c.dup != "" {
		t.Fatalf("order %s twice in the output", c.dup)
	}
	if c.committed == 0 || c.out+c.dlq != c.committed {
		t.Fatalf("committed %d inputs, output %d + dead letters %d: want equal and above 0", c.committed, c.out, c.dlq)
	}
	if c.end <= c.out { // each transaction's commit marker takes an offset of every partition it wrote
		t.Fatalf("output log end %d for %d records: no transaction markers, the output was not transactional", c.end, c.out)
	}
	t.Logf("committed %d orders: %d enriched, %d dead letters", c.committed, c.out, c.dlq)
}
