package kafka_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// The Kafka source follows the one ownership rule of every source (README, "Who owns what"):
// a Kafka event's bytes are recycled after completion like an in-memory event's, so a stage
// that keeps them without copying sees them poisoned in debug mode (and under -race), exactly
// as it would with pipeline.FromSlice in its unit tests.
func TestKafkaEventBytesFollowTheOwnershipRule(t *testing.T) {
	was := pool.Debug()
	pool.SetDebug(true)
	t.Cleanup(func() { pool.SetDebug(was) })
	const n = 20
	cl := startCluster(t, kafkatest.Topic("in", 2))
	produceN(t, cl.Addr(), "in", "v", n, 5)
	var mu sync.Mutex
	var keys, vals, copies [][]byte
	r := start(t, newSource(t, sourceConfig(cl.Addr(), "alias", "in")), func(b *pipeline.Builder) {
		pipeline.To(b.Source(), (&seen{}).sink("keep", func(ev *stage.Event) {
			mu.Lock()
			keys, vals = append(keys, ev.Key), append(vals, ev.Value) // wrong: aliases the event
			copies = append(copies, bytes.Clone(ev.Value))            // right
			mu.Unlock()
		}))
	})
	kafkatest.WaitFor(t, 60*time.Second, "all records completed", func() bool { return r.p.Stats().Completed == n })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range vals {
		if len(copies[i]) == 0 || copies[i][0] != 'v' {
			t.Fatalf("copy %d = %q, want the record", i, copies[i])
		}
		for _, kept := range [][]byte{keys[i], vals[i]} {
			if want := bytes.Repeat([]byte{0xDB}, len(kept)); !bytes.Equal(kept, want) {
				t.Fatalf("kept bytes %q after recycling: want them poisoned, as with every source", kept)
			}
		}
	}
}
