package kafkatest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka/kafkatest"
)

// TestGenerate: Generate produces record(i) for i = 0, 1, ... in order at no more than its
// rate, stops when its context is cancelled, and everything it reports as produced is on the
// topic after it returns (its producer flushed).
func TestGenerate(t *testing.T) {
	c := kafkatest.StartT(t, kafkatest.Topic("gen", 1))
	const rate, enough = 2000, 300
	reached := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		n, err := kafkatest.Generate(ctx, c.Addr(), "gen", rate, func(i int64) ([]byte, []byte) {
			if i == enough {
				close(reached)
			}
			return []byte("k"), []byte(fmt.Sprintf("v-%d", i))
		})
		done <- result{n, err}
	}()
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("Generate did not reach record 300 in 30 s")
	}
	elapsed := time.Since(start) // Generate started after start, so its own time is shorter
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Generate did not return after cancel")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	// At most rate records per second, plus two ticks' worth: the tick that reached record
	// 300 may run on after the cancel, and one more tick may win the select against ctx.Done.
	if limit := int64(elapsed.Seconds()*rate) + rate/50; r.n <= enough || r.n > limit {
		t.Fatalf("produced %d in %v: want more than %d and at most %d", r.n, elapsed, enough, limit)
	}
	msgs, err := kafkatest.ReadMessages(c.Addr(), "gen", int(r.n)+1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(msgs)) != r.n {
		t.Fatalf("topic holds %d records, Generate reported %d", len(msgs), r.n)
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("v-%d", i); string(m.Value) != want || string(m.Key) != "k" {
			t.Fatalf("record %d: key %q value %q, want k %q", i, m.Key, m.Value, want)
		}
	}
}
