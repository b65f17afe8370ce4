package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// The handover tests lay a partition out as: offset 0 with key "slow" (a call that blocks on
// its first owner), then records of other keys, with more "slow" records among them (held
// behind offset 0 by OrderKey, so never finished by the first owner). The first owner finishes
// everything but the "slow" ones: its commit stays at 0, and only the metadata says what
// finished above it.

// layout returns the keys of a partition of n records: "slow" at 0 and at every slowEvery-th
// offset (none if slowEvery is 0), "k-<i%50>" elsewhere.
func layout(n, slowEvery int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k-%d", i%50)
		if i == 0 || (slowEvery > 0 && i%slowEvery == 0) {
			keys[i] = "slow"
		}
	}
	return keys
}

// produceLayout writes keys to topic's partition (values "p<partition>-<i>") and waits.
func produceLayout(t testing.TB, addr, topic string, partition int32, keys []string) {
	t.Helper()
	produceLayoutFrom(t, addr, topic, partition, keys, 0)
}

// produceLayoutFrom writes keys[from:] (values "p<partition>-<i>", i from from).
func produceLayoutFrom(t testing.TB, addr, topic string, partition int32, keys []string, from int) {
	t.Helper()
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": addr, "enable.idempotence": true, "acks": "all", "linger.ms": 5, "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	reports := make(chan ckafka.Event, len(keys))
	for i := from; i < len(keys); i++ {
		k := keys[i]
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: partition}, Key: []byte(k), Value: fmt.Appendf(nil, "p%d-%d", partition, i)}
		if err := p.Produce(m, reports); err != nil {
			t.Fatal(err)
		}
	}
	for range keys[from:] {
		if m := (<-reports).(*ckafka.Message); m.TopicPartition.Error != nil {
			t.Fatal(m.TopicPartition.Error)
		}
	}
}

// offsets is a concurrency-safe record of the offsets a member's stage processed.
type offsets struct {
	mu sync.Mutex
	m  map[[2]int64]int // {partition, offset} → times processed
}

func (o *offsets) add(ev *stage.Event) {
	o.mu.Lock()
	if o.m == nil {
		o.m = map[[2]int64]int{}
	}
	o.m[[2]int64{int64(ev.Partition), ev.Offset}]++
	o.mu.Unlock()
}

func (o *offsets) count(partition int32) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for k, c := range o.m {
		if k[0] == int64(partition) {
			n += c
		}
	}
	return n
}

func (o *offsets) has(partition int32, off int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m[[2]int64{int64(partition), off}] > 0
}

func (o *offsets) snapshot() map[[2]int64]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[[2]int64]int, len(o.m))
	for k, v := range o.m {
		out[k] = v
	}
	return out
}

// recordSink records each processed event in o, after blocking those whose key starts with
// "slow" until release is closed (release nil: no blocking).
func recordSink(o *offsets, release <-chan struct{}) *stage.Stage[*stage.Event, stage.None] {
	return stage.Sink("record", func(ctx context.Context, ev *stage.Event) error {
		if release != nil && strings.HasPrefix(string(ev.Key), "slow") {
			<-release
		}
		o.add(ev)
		return nil
	}, stage.WithConcurrency(100))
}

// committedWithMeta returns the group's committed offsets of topic with their metadata.
func committedWithMeta(t testing.TB, addr, group, topic string, partitions int) []ckafka.TopicPartition {
	t.Helper()
	res, err := readCommitted(addr, group, topic, partitions)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// readCommitted is committedWithMeta's query (it fails while the group does not exist yet).
func readCommitted(addr, group, topic string, partitions int) ([]ckafka.TopicPartition, error) {
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": addr, "group.id": group, "log_level": 3})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	tps := make([]ckafka.TopicPartition, partitions)
	for i := range tps {
		tps[i] = ckafka.TopicPartition{Topic: &topic, Partition: int32(i)}
	}
	return c.Committed(tps, 5000)
}

func metaOf(tp ckafka.TopicPartition) string {
	if tp.Metadata == nil {
		return ""
	}
	return *tp.Metadata
}

// TestCommitMetadataHandoverAfterRevokeTimeout: one slow key holds each partition's commit at
// offset 0 while the 1,000 later records (other keys) finish on member A. Member B joins; the
// partition that moves to it is revoked from A while the slow call is still running (past
// RevokeTimeout). B processes none of the 1,000 again, and processes the slow record and the
// slow key's later records (A held them behind it).
func TestCommitMetadataHandoverAfterRevokeTimeout(t *testing.T) {
	const parts, fast = 2, 1000
	cl := startCluster(t, kafkatest.Topic("in", parts))
	keys := layout(1+fast, 0)
	keys = append(keys, layout(11, 1)[1:]...) // 10 more "slow" after the fast ones: offsets 1001..1010
	for p := range int32(parts) {
		produceLayout(t, cl.Addr(), "in", p, keys)
	}
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	var seenA, seenB offsets
	cfgA := sourceConfig(cl.Addr(), "g-meta", "in")
	cfgA.RevokeTimeout = time.Second
	a := start(t, newSource(t, cfgA), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seenA, release)) })
	kafkatest.WaitFor(t, 60*time.Second, "A to finish the fast records of both partitions", func() bool {
		return seenA.count(0) == fast && seenA.count(1) == fast
	})
	b := start(t, newSource(t, sourceConfig(cl.Addr(), "g-meta", "in")), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seenB, nil)) })
	var moved int32 = -1
	kafkatest.WaitFor(t, 60*time.Second, "B to get a partition", func() bool {
		st := b.src.Stats()
		if len(st.Partitions) == 1 {
			moved = st.Partitions[0].Partition
			return true
		}
		return false
	})
	end := int64(len(keys))
	kafkatest.WaitFor(t, 60*time.Second, "B to commit the moved partition to its end", func() bool {
		return committed(t, cl.Addr(), "g-meta", "in", parts)[moved] == end
	})
	if st := a.src.Stats(); st.RevokeTimeouts == 0 {
		t.Fatalf("A's revoke did not time out (the slow call should outlast RevokeTimeout): %+v", st)
	}
	// B processed exactly the slow record and the slow key's later ones: none of the 1,000.
	got := seenB.snapshot()
	redone := 0
	for k := range got {
		if k[0] == int64(moved) && k[1] >= 1 && k[1] <= fast {
			redone++
		}
	}
	if redone > 0 {
		t.Fatalf("B processed %d of the %d records A had finished on partition %d again", redone, fast, moved)
	}
	for off := int64(0); off < end; off++ {
		if (off == 0 || off > fast) && !seenB.has(moved, off) {
			t.Fatalf("B never processed offset %d of partition %d (the slow key's)", off, moved)
		}
	}
	if n := seenB.count(moved); n != 11 {
		t.Fatalf("B processed %d records of partition %d, want the 11 of the slow key", n, moved)
	}
	if st := b.src.Stats(); st.SkippedFinished != fast {
		t.Fatalf("B skipped %d, want %d", st.SkippedFinished, fast)
	}
	close(release)
	for _, r := range []*running{a, b} {
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// sourceRun wraps a Source to report when its Run returned (the source polls no more).
type sourceRun struct {
	*kafka.Source
	ran chan struct{}
}

func (s *sourceRun) Run(ctx context.Context, emit *pipeline.Emitter) error {
	defer close(s.ran)
	return s.Source.Run(ctx, emit)
}

// TestCommitMetadataRestartAfterGracefulStop: a member is stopped while two records of the
// slow key are held behind its first (in flight, then drained), with 198 records of other keys
// finished above them: its commit stays at the first held one. A new source of the group
// processes only the two held records: nothing is redone.
func TestCommitMetadataRestartAfterGracefulStop(t *testing.T) {
	const n = 1000
	cl := startCluster(t, kafkatest.Topic("in", 1))
	// "slow" at 0, 801 and 901. Fewer than maxHeldPerPartition (256) records follow the first
	// held one, and 801 comes in a second batch, after the first is processed: it is the first
	// of its burst, so it is held without a pause (a partition paused while a record is held
	// behind a blocked key would not resume until that key is free).
	keys := layout(n, 0)
	keys[801], keys[901] = "slow", "slow"
	produceLayout(t, cl.Addr(), "in", 0, keys[:801])
	release := make(chan struct{})
	var seenA, seenB offsets
	src := &sourceRun{Source: newSource(t, sourceConfig(cl.Addr(), "g-graceful", "in")), ran: make(chan struct{})}
	b := pipeline.New(src, append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()))...)
	pipeline.To(b.Source(), recordSink(&seenA, release))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	kafkatest.WaitFor(t, 60*time.Second, "A to finish the first batch's other keys", func() bool { return seenA.count(0) == 800 })
	produceLayoutFrom(t, cl.Addr(), "in", 0, keys, 801)
	kafkatest.WaitFor(t, 60*time.Second, "A to finish every record of the other keys", func() bool { return seenA.count(0) == n-3 })
	cancel()
	<-src.ran      // the source polls no more: the slow key's held records stay held
	close(release) // the drain finishes the one in flight
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c := committed(t, cl.Addr(), "g-graceful", "in", 1)[0]; c != 801 {
		t.Fatalf("committed %d after the stop, want 801 (the first held slow record)", c)
	}
	r := start(t, newSource(t, sourceConfig(cl.Addr(), "g-graceful", "in")), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seenB, nil)) })
	kafkatest.WaitFor(t, 60*time.Second, "the restart to commit to the end", func() bool {
		return committed(t, cl.Addr(), "g-graceful", "in", 1)[0] == n
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	a, bs := seenA.snapshot(), seenB.snapshot()
	for k := range bs {
		if a[k] > 0 {
			t.Fatalf("offset %d processed again after the graceful stop (restart processed %d)", k[1], len(bs))
		}
	}
	if len(a)+len(bs) != n || len(bs) != 2 {
		t.Fatalf("first run %d + restart %d, want %d (restart: the 2 held slow records)", len(a), len(bs), n)
	}
}

// logRecorder keeps the messages of Warn (and above) records.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		l.mu.Lock()
		l.msgs = append(l.msgs, r.Message)
		l.mu.Unlock()
	}
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// TestCommitMetadataCorruptOrUnknownVersion: a plain consumer commits offset 5 of each
// partition with metadata that is not base64, of an unknown version, or damaged. The source
// warns, consumes from offset 5 as usual, and does not crash.
func TestCommitMetadataCorruptOrUnknownVersion(t *testing.T) {
	const parts, n = 3, 50
	cl := startCluster(t, kafkatest.Topic("in", parts))
	for p := range int32(parts) {
		produceLayout(t, cl.Addr(), "in", p, layout(n, 0))
	}
	metas := []string{"not base64 at all!", "CQEAAAA", "AQD_____________"} // garbage; version 9; a run that overflows
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": cl.Addr(), "group.id": "g-corrupt", "log_level": 3})
	if err != nil {
		t.Fatal(err)
	}
	topic := "in"
	var tps []ckafka.TopicPartition
	for p := range int32(parts) {
		tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: p, Offset: 5, Metadata: &metas[p]})
	}
	if _, err := c.CommitOffsets(tps); err != nil {
		t.Fatal(err)
	}
	c.Close()
	for i, tp := range committedWithMeta(t, cl.Addr(), "g-corrupt", "in", parts) {
		if metaOf(tp) != metas[i] {
			t.Fatalf("the broker returned metadata %q, committed %q", metaOf(tp), metas[i])
		}
	}
	logs := &logRecorder{}
	cfg := sourceConfig(cl.Addr(), "g-corrupt", "in")
	cfg.Logger = slog.New(logs)
	var seen offsets
	r := start(t, newSource(t, cfg), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seen, nil)) })
	kafkatest.WaitFor(t, 60*time.Second, "every record from offset 5", func() bool {
		return seen.count(0)+seen.count(1)+seen.count(2) >= parts*(n-5)
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	for k := range seen.snapshot() {
		if k[1] < 5 {
			t.Fatalf("processed offset %d/%d below the committed offset", k[0], k[1])
		}
	}
	if got := seen.count(0) + seen.count(1) + seen.count(2); got != parts*(n-5) {
		t.Fatalf("processed %d, want %d", got, parts*(n-5))
	}
	st := r.src.Stats()
	if st.MetaIgnored != parts || st.SkippedFinished != 0 {
		t.Fatalf("MetaIgnored %d (want %d), SkippedFinished %d (want 0)", st.MetaIgnored, parts, st.SkippedFinished)
	}
	if w := logs.count("sluice/kafka: commit metadata ignored: finished work above the committed offset may be processed again"); w != parts {
		t.Fatalf("%d warnings, want %d", w, parts)
	}
}

// TestCommitMetadataCapPausesPartition: with a tiny CommitMetadataMaxBytes (64), every fifth
// record blocking (distinct keys "slow-<i>", all in flight together) and the others finishing,
// the finished offsets are scattered. The partition pauses once the offset range above the
// oldest unfinished one reaches what the cap can encode as a bitset (288 offsets), the
// committed metadata stays within the cap, and once the blocked records finish the commit
// catches up, the partition resumes and nothing is lost or repeated.
func TestCommitMetadataCapPausesPartition(t *testing.T) {
	const n, capBytes = 2001, 64
	cl := startCluster(t, kafkatest.Topic("in", 1))
	keys := layout(n, 0)
	for i := 0; i < n; i += 5 {
		keys[i] = fmt.Sprintf("slow-%d", i)
	}
	produceLayout(t, cl.Addr(), "in", 0, keys)
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	cfg := sourceConfig(cl.Addr(), "g-cap", "in")
	cfg.CommitMetadataMaxBytes = capBytes
	var seen offsets
	r := start(t, newSource(t, cfg), func(b *pipeline.Builder) { pipeline.To(b.Source(), recordSink(&seen, release)) })
	kafkatest.WaitFor(t, 60*time.Second, "the partition to pause at the metadata bound", func() bool {
		st := r.src.Stats()
		return len(st.Partitions) == 1 && st.Partitions[0].Paused && seen.count(0) > 0
	})
	// The bitset of the range fits: 64 characters are 48 bytes, 12 of header: 288 offsets above
	// the unfinished offset 0 are admitted (0..288), then the partition pauses; 231 of them
	// finish (not the multiples of 5).
	const maxRange = (capBytes*3/4 - 12) * 8
	const finished = maxRange - maxRange/5
	var tp ckafka.TopicPartition
	kafkatest.WaitFor(t, 30*time.Second, "a commit of every admitted record's offset", func() bool {
		tp = committedWithMeta(t, cl.Addr(), "g-cap", "in", 1)[0]
		fin, err := kafka.FinishedInMeta(metaOf(tp), int64(tp.Offset), n)
		return err == nil && len(fin) == finished
	})
	if m := metaOf(tp); len(m) > capBytes || tp.Offset != 0 {
		t.Fatalf("committed offset %d with metadata of %d bytes, want 0 within the cap %d", tp.Offset, len(m), capBytes)
	}
	before := seen.count(0)
	for k := range seen.snapshot() {
		if k[1] > maxRange {
			t.Fatalf("offset %d processed while offset 0 was unfinished: beyond the range %d the cap encodes", k[1], maxRange)
		}
	}
	if st := r.src.Stats(); len(st.Partitions) != 1 || !st.Partitions[0].Paused {
		t.Fatalf("the partition is not paused: %+v", st.Partitions)
	}
	close(release)
	kafkatest.WaitFor(t, 60*time.Second, "everything, committed", func() bool {
		return committed(t, cl.Addr(), "g-cap", "in", 1)[0] == n
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	got := seen.snapshot()
	if len(got) != n {
		t.Fatalf("processed %d distinct, want %d", len(got), n)
	}
	for k, c := range got {
		if c != 1 {
			t.Fatalf("offset %d processed %d times", k[1], c)
		}
	}
	if st := r.src.Stats(); st.MetaTruncated != 0 || st.Pauses == 0 {
		t.Fatalf("MetaTruncated %d, Pauses %d", st.MetaTruncated, st.Pauses)
	}
	t.Logf("paused after %d of %d records; committed metadata %d bytes", before, n, len(metaOf(tp)))
}
