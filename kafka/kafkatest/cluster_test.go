package kafkatest_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
)

const nRecords = 1000

// TestProduceConsumeGroup round-trips records through librdkafka: an
// idempotent acks=all producer, then a consumer group with manual offset
// store and commit, for each group protocol librdkafka offers.
func TestProduceConsumeGroup(t *testing.T) {
	t.Logf("librdkafka %s", func() string { _, s := kafka.LibraryVersion(); return s }())
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"classic-range", nil},
		{"classic-cooperative-sticky", []string{"partition.assignment.strategy", "cooperative-sticky"}},
		{"consumer-kip848", []string{"group.protocol", "consumer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 40*time.Second)
			const topic, parts = "events", 4
			c := kafkatest.StartT(t, kafkatest.Topic(topic, parts))

			p := newProducer(t, c.Addr())
			sent := produce(ctx, t, p, topic, "v", nRecords)

			cons := newConsumer(t, c.Addr(), "g-"+tc.name, tc.extra...)
			if err := cons.SubscribeTopics([]string{topic}, nil); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			got := consume(ctx, t, cons, sent)
			t.Logf("consumed %d messages (%d distinct) in %v", got, len(sent), time.Since(start))
			checkCommitted(t, cons, p, topic, parts)

			infos := c.Kfake().PartitionInfos(topic)
			var hwm int64
			for _, pi := range infos {
				hwm += pi.HighWatermark
			}
			if hwm != nRecords {
				t.Errorf("kfake high watermarks sum to %d, want %d (idempotent producer duplicated?)", hwm, nRecords)
			}
		})
	}
}

// TestTrim checks that Trim moves every low watermark up to the high
// watermark, frees the records and that consumers then only see new records.
func TestTrim(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	const topic, parts = "trimmed", 3
	c := kafkatest.StartT(t, kafkatest.Topic(topic, parts))
	p := newProducer(t, c.Addr())
	produce(ctx, t, p, topic, "old", 300)

	lows, highs := watermarks(t, p, topic, parts)
	if sum(lows) != 0 || sum(highs) != 300 {
		t.Fatalf("before trim: lows %v highs %v", lows, highs)
	}
	if err := c.Trim(ctx, topic); err != nil {
		t.Fatal(err)
	}
	lows2, highs2 := watermarks(t, p, topic, parts)
	if !slices.Equal(lows2, highs2) || !slices.Equal(highs2, highs) {
		t.Fatalf("after trim: lows %v highs %v, want both %v", lows2, highs2, highs)
	}
	for _, pi := range c.Kfake().PartitionInfos(topic) {
		if pi.NumBytes != 0 {
			t.Errorf("partition %d still holds %d bytes", pi.Partition, pi.NumBytes)
		}
	}

	// A new group starting at "earliest" sees only what follows the trim.
	fresh := produce(ctx, t, p, topic, "new", 50)
	cons := newConsumer(t, c.Addr(), "after-trim")
	if err := cons.SubscribeTopics([]string{topic}, nil); err != nil {
		t.Fatal(err)
	}
	if n := consume(ctx, t, cons, fresh); n != 50 {
		t.Errorf("received %d messages after trim, want 50", n)
	}

	if err := c.Trim(ctx, "missing"); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("Trim(missing) = %v, want UnknownTopicOrPartition", err)
	}
	if err := c.TrimAll(ctx); err != nil {
		t.Errorf("TrimAll: %v", err)
	}
	lows3, highs3 := watermarks(t, p, topic, parts)
	if !slices.Equal(lows3, highs3) {
		t.Errorf("after TrimAll: lows %v highs %v", lows3, highs3)
	}
}

// TestThreeBrokers checks librdkafka sees three brokers, partition leaders
// among them, and round-trips records through a group.
func TestThreeBrokers(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	const topic, parts = "spread", 6
	c := kafkatest.StartT(t, kafkatest.Brokers(3), kafkatest.Topic(topic, parts))
	if n := len(strings.Split(c.Addr(), ",")); n != 3 {
		t.Fatalf("Addr %q lists %d brokers, want 3", c.Addr(), n)
	}

	p := newProducer(t, c.Addr())
	md, err := p.GetMetadata(new(topic), false, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 3 {
		t.Fatalf("metadata lists %d brokers, want 3: %+v", len(md.Brokers), md.Brokers)
	}
	ids := map[int32]bool{}
	for _, b := range md.Brokers {
		if b.Host != "127.0.0.1" {
			t.Errorf("broker %d advertises host %q", b.ID, b.Host)
		}
		ids[b.ID] = true
	}
	tm := md.Topics[topic]
	if len(tm.Partitions) != parts {
		t.Fatalf("topic has %d partitions, want %d", len(tm.Partitions), parts)
	}
	for _, pm := range tm.Partitions {
		if !ids[pm.Leader] {
			t.Errorf("partition %d led by unknown broker %d", pm.ID, pm.Leader)
		}
	}

	sent := produce(ctx, t, p, topic, "v", nRecords)
	cons := newConsumer(t, c.Addr(), "three")
	if err := cons.SubscribeTopics([]string{topic}, nil); err != nil {
		t.Fatal(err)
	}
	consume(ctx, t, cons, sent)
	checkCommitted(t, cons, p, topic, parts)
}

// TestDataDirRestart closes a persistent cluster and starts another on the
// same directory and ports: records and committed offsets survive.
func TestDataDirRestart(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	dir := t.TempDir()
	const topic, parts, group = "durable", 2, "restart"
	opts := []kafkatest.Option{kafkatest.DataDir(dir), kafkatest.Ports(freePort(t)), kafkatest.Topic(topic, parts)}

	c1, err := kafkatest.Start(opts...)
	if err != nil {
		t.Fatal(err)
	}
	p1 := newProducer(t, c1.Addr())
	first := produce(ctx, t, p1, topic, "a", 100)
	cons1 := newConsumer(t, c1.Addr(), group)
	if err := cons1.SubscribeTopics([]string{topic}, nil); err != nil {
		t.Fatal(err)
	}
	consume(ctx, t, cons1, first)
	if err := cons1.Close(); err != nil {
		t.Fatal(err)
	}
	p1.Close()
	c1.Close()

	c2 := kafkatest.StartT(t, opts...)
	if c2.Addr() != c1.Addr() {
		t.Fatalf("restarted on %s, want %s", c2.Addr(), c1.Addr())
	}
	var hwm int64
	for _, pi := range c2.Kfake().PartitionInfos(topic) {
		hwm += pi.HighWatermark
	}
	if hwm != 100 {
		t.Fatalf("after restart high watermarks sum to %d, want 100", hwm)
	}
	p2 := newProducer(t, c2.Addr())
	cons2 := newConsumer(t, c2.Addr(), group)
	checkCommitted(t, cons2, p2, topic, parts)

	// The group resumes from its committed offsets: only new records arrive.
	second := produce(ctx, t, p2, topic, "b", 10)
	if err := cons2.SubscribeTopics([]string{topic}, nil); err != nil {
		t.Fatal(err)
	}
	if n := consume(ctx, t, cons2, second); n != 10 {
		t.Errorf("received %d records after restart, want 10", n)
	}
	if err := cons2.Close(); err != nil {
		t.Fatal(err)
	}
	p2.Close()

	// A different partition count for an existing topic is an error.
	c2.Close()
	if _, err := kafkatest.Start(kafkatest.DataDir(dir), kafkatest.Topic(topic, 5)); err == nil {
		t.Error("Start with a mismatched partition count succeeded")
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestOptionsAndLifecycle covers option validation, CreateTopic, Topics and
// Close without librdkafka.
func TestOptionsAndLifecycle(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	for _, bad := range [][]kafkatest.Option{
		{kafkatest.Brokers(0)},
		{kafkatest.Topic("", 1)},
		{kafkatest.Topic("t", 0)},
		{kafkatest.Brokers(2), kafkatest.Ports(freePort(t))},
	} {
		if c, err := kafkatest.Start(bad...); err == nil {
			c.Close()
			t.Errorf("Start(%d bad options) succeeded", len(bad))
		}
	}

	c, err := kafkatest.Start(kafkatest.Topic("a", 1), kafkatest.KfakeOption(kfake.ClusterID("kt")))
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(c.Addr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr %q: host %q, %v", c.Addr(), host, err)
	}
	if n, _ := strconv.Atoi(port); n == 0 {
		t.Fatalf("Addr %q has no port", c.Addr())
	}
	if err := c.CreateTopic(ctx, "b", 2); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateTopic(ctx, "b", 2); !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Errorf("second CreateTopic = %v, want TopicAlreadyExists", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.CreateTopic(cctx, "c", 1); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateTopic with canceled ctx = %v", err)
	}
	topics, err := c.Topics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Sort(topics); !slices.Equal(topics, []string{"a", "b"}) {
		t.Errorf("Topics = %v, want [a b]", topics)
	}

	c.Close()
	c.Close() // idempotent
	if err := c.Trim(ctx, "a"); err == nil {
		t.Error("Trim after Close succeeded")
	}
	if err := c.CreateTopic(ctx, "d", 1); err == nil {
		t.Error("CreateTopic after Close succeeded")
	}
	if _, err := c.Topics(ctx); err == nil {
		t.Error("Topics after Close succeeded")
	}
	if conn, err := net.Dial("tcp", c.Addr()); err == nil {
		conn.Close()
		t.Error("broker still accepts connections after Close")
	}
}
