package kafka_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
)

// TestSourceHandsOverInBursts: messages Poll returns back to back reach a one-worker stage in
// bursts (Stats: more than one message per burst on average), each key in offset order
// (OrderKey, the default: a burst stops short of a key already in flight, and the held messages
// follow in order), each message once, and the commits reach the end.
func TestSourceHandsOverInBursts(t *testing.T) {
	const n, parts = 3000, 3
	cl := startCluster(t, kafkatest.Topic("in", parts))
	want := produceN(t, cl.Addr(), "in", "v", n, 50)
	src := newSource(t, sourceConfig(cl.Addr(), "g-bursts", "in"))
	var got seen
	r := start(t, src, func(b *pipeline.Builder) { pipeline.To(b.Source(), got.sink("collect", nil)) })
	kafkatest.WaitFor(t, 60*time.Second, "every message", func() bool { return len(got.all()) >= n })
	recs := got.all()
	requireSet(t, want, values(recs))
	if len(recs) != n {
		t.Fatalf("%d records for %d messages: duplicates", len(recs), n)
	}
	type pk struct {
		p int32
		k string
	}
	last := map[pk]int64{}
	for _, rc := range recs {
		if prev, ok := last[pk{rc.Partition, rc.Key}]; ok && rc.Offset <= prev {
			t.Fatalf("partition %d key %q: offset %d after %d", rc.Partition, rc.Key, rc.Offset, prev)
		}
		last[pk{rc.Partition, rc.Key}] = rc.Offset
	}
	st := src.Stats()
	if st.Bursts == 0 || st.BurstMessages <= st.Bursts {
		t.Fatalf("bursts %d carrying %d messages: want bursts of more than one message", st.Bursts, st.BurstMessages)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	requireCommittedAtEnd(t, cl.Addr(), "g-bursts", "in", parts)
}
