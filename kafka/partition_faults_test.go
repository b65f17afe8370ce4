package kafka_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestFaultStuckEventBoundsSpan: offset 0 of a partition never finishes (until the test
// releases it) while the 20,000 records after it would finish at once. The source reads at
// most MaxInFlightPerPartition records of the partition from offset 0 on, stuck one included
// (the documented replay window), pauses the partition, and commits nothing past offset 0;
// once offset 0 is released everything completes and the commit reaches the end.
func TestFaultStuckEventBoundsSpan(t *testing.T) {
	const n, span = 20001, 64
	cl := startCluster(t, kafkatest.Topic("in", 1))
	produceN(t, cl.Addr(), "in", "v", n, 1)
	cfg := sourceConfig(cl.Addr(), "g-span", "in")
	cfg.Ordering, cfg.MaxInFlightPerPartition = kafka.OrderNone, span
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	var past atomic.Int64 // records after offset 0 processed
	r := start(t, newSource(t, cfg), func(b *pipeline.Builder) {
		pipeline.To(b.Source(), stage.Sink("work", func(ctx context.Context, ev *stage.Event) error {
			if ev.Offset == 0 {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
				return nil
			}
			past.Add(1)
			return nil
		}, stage.WithConcurrency(8), stage.WithUnordered()))
	})
	t.Cleanup(unblock)     // before the pipeline stops (cleanups run last first)
	const bound = span - 1 // the window holds offset 0 and at most span-1 records after it
	kafkatest.WaitFor(t, 30*time.Second, "the records after the stuck one to reach the bound", func() bool { return past.Load() >= bound })
	// It stays there: the partition is paused, not read on (several commit intervals and
	// many fetch rounds pass).
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if p := past.Load(); p > bound {
			t.Fatalf("%d records processed past the stuck offset 0, bound %d (MaxInFlightPerPartition %d)", p, bound, span)
		}
	}
	if st := r.src.Stats(); st.Paused != 1 {
		t.Fatalf("partition not paused at the bound: %+v", st)
	}
	if c := committed(t, cl.Addr(), "g-span", "in", 1)[0]; c > 0 {
		t.Fatalf("committed %d while offset 0 is unfinished", c)
	}
	unblock()
	t0 := time.Now()
	kafkatest.WaitFor(t, 60*time.Second, "every record to complete", func() bool { return r.p.Stats().Completed >= n })
	requireCommittedAtEnd(t, cl.Addr(), "g-span", "in", 1)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("after release: %v, pauses %d", time.Since(t0), r.src.Stats().Pauses)
	if p := past.Load(); p != n-1 {
		t.Fatalf("processed %d records after offset 0, want %d", p, n-1)
	}
}

// TestFaultStageChangesKey: under OrderKey, a first stage that clears or replaces ev.Key does
// not leave the record's key busy: all 20 records of one key complete, one at a time, and the
// commit reaches the end.
func TestFaultStageChangesKey(t *testing.T) {
	for name, change := range map[string]func(ev *stage.Event){
		"cleared":  func(ev *stage.Event) { ev.Key = nil },
		"replaced": func(ev *stage.Event) { ev.Key = []byte("other-" + string(ev.Value)) },
	} {
		t.Run(name, func(t *testing.T) {
			const n = 20
			cl := startCluster(t, kafkatest.Topic("in", 1))
			want := produceN(t, cl.Addr(), "in", "v", n, 1)
			group := "g-key-" + name
			var got seen
			var conc maxTracker
			r := start(t, newSource(t, sourceConfig(cl.Addr(), group, "in")), func(b *pipeline.Builder) {
				changed := pipeline.Then(b.Source(), stage.Map("change", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
					if string(ev.Key) != "k-0" {
						return nil, fmt.Errorf("key %q at the first stage", ev.Key)
					}
					change(ev)
					return ev, nil
				}))
				work := pipeline.Then(changed, stage.Map("work", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
					conc.enter()
					defer conc.leave()
					time.Sleep(time.Millisecond)
					return ev, nil
				}, stage.WithConcurrency(4), stage.WithUnordered()))
				pipeline.To(work, got.sink("collect", nil))
			})
			kafkatest.WaitFor(t, 30*time.Second, "every record of the key", func() bool { return len(got.all()) >= n })
			requireCommittedAtEnd(t, cl.Addr(), group, "in", 1)
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			requireSet(t, want, values(got.all()))
			if p := conc.peak(); p != 1 {
				t.Fatalf("%d events of one key in flight together", p)
			}
		})
	}
}

// keyGauge counts the events of each key inside a stage and remembers any key seen twice at
// once.
type keyGauge struct {
	mu      sync.Mutex
	cur     map[string]int
	doubled []string
}

func (g *keyGauge) enter(k string) {
	g.mu.Lock()
	if g.cur == nil {
		g.cur = map[string]int{}
	}
	if g.cur[k]++; g.cur[k] > 1 {
		g.doubled = append(g.doubled, k)
	}
	g.mu.Unlock()
}

func (g *keyGauge) leave(k string) {
	g.mu.Lock()
	g.cur[k]--
	g.mu.Unlock()
}

func (g *keyGauge) twice() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.doubled...)
}

// produceTo writes records with the given keys and values to one partition and waits for
// delivery.
func produceTo(t testing.TB, addr, topic string, partition int32, kvs ...string) {
	t.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": addr, "enable.idempotence": true, "acks": "all", "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	reports := make(chan ckafka.Event, len(kvs)/2)
	for i := 0; i+1 < len(kvs); i += 2 {
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: partition}, Key: []byte(kvs[i]), Value: []byte(kvs[i+1])}
		if err := p.Produce(m, reports); err != nil {
			t.Fatal(err)
		}
	}
	for range len(kvs) / 2 {
		if m := (<-reports).(*ckafka.Message); m.TopicPartition.Error != nil {
			t.Fatal(m.TopicPartition.Error)
		}
	}
}

// TestFaultRevokeTimeoutReassignedKey: member A has a call of key "stuck-p" blocked on each
// partition p when B joins; A's revoke of the partition B takes times out (the call goes on).
// B then leaves and the partition comes back to A, where a new record of the same key
// arrives: A must not start it while its first call of that key still runs. Once the calls
// are released everything completes and the commits reach the end.
func TestFaultRevokeTimeoutReassignedKey(t *testing.T) {
	const parts = 2
	cl := startCluster(t, kafkatest.Topic("in", parts))
	for p := range int32(parts) {
		kvs := []string{fmt.Sprintf("stuck-%d", p), fmt.Sprintf("a-%d-0", p)}
		for i := 1; i < 10; i++ {
			kvs = append(kvs, fmt.Sprintf("o-%d-%d", p, i), fmt.Sprintf("a-%d-%d", p, i))
		}
		produceTo(t, cl.Addr(), "in", p, kvs...)
	}
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	var blocked sync.Map // partition → the first call of offset 0 started
	var nblocked atomic.Int32
	var gauge keyGauge
	var gotA, gotB seen
	cfg := sourceConfig(cl.Addr(), "g-revoke-key", "in")
	cfg.RevokeTimeout = time.Second
	a := start(t, newSource(t, cfg), func(b *pipeline.Builder) {
		work := pipeline.Then(b.Source(), stage.Map("work", func(ctx context.Context, ev *stage.Event) (*stage.Event, error) {
			k := string(ev.Key)
			gauge.enter(k)
			defer gauge.leave(k)
			if ev.Offset != 0 {
				return ev, nil
			}
			if _, again := blocked.LoadOrStore(ev.Partition, true); !again {
				nblocked.Add(1)
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return ev, nil
		}, stage.WithConcurrency(8), stage.WithUnordered()))
		pipeline.To(work, gotA.sink("collect", nil))
	})
	t.Cleanup(unblock)
	kafkatest.WaitFor(t, 30*time.Second, "A to block a call on each partition and finish the rest", func() bool {
		return nblocked.Load() == parts && len(gotA.all()) == parts*9
	})
	bcfg := sourceConfig(cl.Addr(), "g-revoke-key", "in")
	b := start(t, newSource(t, bcfg), func(bb *pipeline.Builder) {
		pipeline.To(bb.Source(), gotB.sink("collect", nil))
	})
	// B processes the stuck record; the 9 A finished above it are in the commit's metadata
	// (A's revoke commit): B completes them without processing them again.
	kafkatest.WaitFor(t, 30*time.Second, "B to process the partition A let go", func() bool {
		return len(gotB.all()) >= 1 && b.src.Stats().SkippedFinished == 9
	})
	if got := gotB.all(); len(got) != 1 || got[0].Offset != 0 {
		t.Fatalf("B processed %v, want only the stuck record (offset 0)", got)
	}
	moved := gotB.all()[0].Partition
	if st := a.src.Stats(); st.RevokeTimeouts == 0 {
		t.Fatalf("A's revoke did not time out: %+v", st)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitFor(t, 30*time.Second, "the partition to come back to A", func() bool { return a.src.Stats().Assigned == parts })
	// A new record of the stuck key, then one of another key: once A processed the second,
	// it received the first.
	marker := fmt.Sprintf("after-%d", moved)
	produceTo(t, cl.Addr(), "in", moved, fmt.Sprintf("stuck-%d", moved), "again", "other", marker)
	kafkatest.WaitFor(t, 30*time.Second, "A to process the record after the stuck key's new one", func() bool {
		return values(gotA.all())[marker] > 0
	})
	if d := gauge.twice(); len(d) > 0 {
		t.Fatalf("keys %v had two events in flight on A", d)
	}
	unblock()
	kafkatest.WaitFor(t, 30*time.Second, "A to process the new record of the stuck key", func() bool { return values(gotA.all())["again"] > 0 })
	requireCommittedAtEnd(t, cl.Addr(), "g-revoke-key", "in", parts)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if d := gauge.twice(); len(d) > 0 {
		t.Fatalf("keys %v had two events in flight on A", d)
	}
}

// TestFaultOffsetMovesBackwards: the topic is deleted and re-created while the source runs,
// so the partition's offsets start again from 0 (as after a log truncation and
// auto.offset.reset). The new records are processed and the committed offset follows them
// down to the new high watermark.
func TestFaultOffsetMovesBackwards(t *testing.T) {
	const n1, n2 = 300, 40
	cl := startCluster(t, kafkatest.Topic("in", 1))
	produceN(t, cl.Addr(), "in", "old", n1, 10)
	var got seen
	r := start(t, newSource(t, sourceConfig(cl.Addr(), "g-back", "in")), func(b *pipeline.Builder) {
		pipeline.To(b.Source(), got.sink("collect", nil))
	})
	kafkatest.WaitFor(t, 30*time.Second, "the first records to be processed", func() bool { return len(got.all()) >= n1 })
	requireCommittedAtEnd(t, cl.Addr(), "g-back", "in", 1)
	if err := cl.Kfake().DeleteTopic("in"); err != nil {
		t.Fatal(err)
	}
	if err := cl.CreateTopic(context.Background(), "in", 1); err != nil {
		t.Fatal(err)
	}
	want := produceN(t, cl.Addr(), "in", "new", n2, 10)
	kafkatest.WaitFor(t, 60*time.Second, "the new records to be processed", func() bool {
		k := 0
		for _, r := range got.all() {
			if strings.HasPrefix(r.Value, "new-") {
				k++
			}
		}
		return k >= n2
	})
	requireCommittedAtEnd(t, cl.Addr(), "g-back", "in", 1)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	newVals := map[string]int{}
	for v, k := range values(got.all()) {
		if strings.HasPrefix(v, "new-") {
			newVals[v] = k
		}
	}
	requireSet(t, want, newVals)
	if st := r.src.Stats(); st.Rewinds == 0 {
		t.Fatalf("the offsets never moved backwards on the assignment (rebalanced instead?): %+v", st)
	}
}
