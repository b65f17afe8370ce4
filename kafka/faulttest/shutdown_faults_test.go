package faulttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// copyRun is source "in" → copy → the producer's sink to "out", running in the background.
type copyRun struct {
	p    *pipeline.Pipeline
	prod *kafka.Producer
	done chan error
	stop context.CancelFunc
}

type copyOpts struct {
	dlq     string // "": the default error handler; else DeadLetter(dlq)
	ownDLQ  bool   // dead-letter through a producer of its own (closed at the test's end)
	timeout int    // the producers' message.timeout.ms
	pipe    []pipeline.Option
}

func startCopy(t *testing.T, addr string, o copyOpts) *copyRun {
	t.Helper()
	src, err := kafka.NewSource(kafka.Config{Brokers: addr, GroupID: "g", Topics: []string{"in"}, Overrides: kafkatest.FastGroup(),
		CommitInterval: 100 * time.Millisecond, Logger: kafkatest.Logger(), Budget: 8 << 20, MaxMessageBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out", Overrides: map[string]any{"message.timeout.ms": o.timeout}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close(context.Background()) }) // the test's producer: the sink only flushes it
	opts := append(src.PipelineOptions(), pipeline.WithLogger(kafkatest.Logger()))
	if o.dlq != "" {
		dlqProd := prod
		if o.ownDLQ {
			if dlqProd, err = kafka.NewProducer(kafka.ProducerConfig{Brokers: addr, Logger: kafkatest.Logger(), Budget: 8 << 20,
				MaxMessageBytes: 256 << 10, Overrides: map[string]any{"message.timeout.ms": o.timeout}}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = dlqProd.Close(context.Background()) })
		}
		opts = append(opts, pipeline.WithErrorHandler(dlqProd.DeadLetter(o.dlq)))
	}
	b := pipeline.New(src, append(opts, o.pipe...)...)
	recs := pipeline.Then(b.Source(), stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		return kafka.Record{Key: append([]byte(nil), ev.Key...), Value: append([]byte(nil), ev.Value...)}, nil
	}))
	pipeline.To(recs, prod.Sink("produce", stage.WithConcurrency(4)))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &copyRun{p: p, prod: prod, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- p.Run(ctx) }()
	return r
}

// awaitRun waits up to d for Run to return and returns its error; it fails the test (with a
// goroutine dump) if Run is still running then.
func awaitRun(t *testing.T, done <-chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2) // where it is stuck
		t.Fatalf("Run did not return within %v", d)
		return nil
	}
}

// topicValues reads every partition of topic up to its high watermark (as it is now) and
// returns the values read, with their count.
func topicValues(t *testing.T, addr, topic string, parts int) *seen {
	t.Helper()
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": addr, "group.id": fmt.Sprintf("reader-%d", time.Now().UnixNano()),
		"auto.offset.reset": "earliest", "enable.auto.commit": false, "log_level": 3, "fetch.wait.max.ms": 50})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	remaining := map[int32]int64{}
	for p := range int32(parts) {
		_, high, err := c.QueryWatermarkOffsets(topic, p, 10000)
		if err != nil {
			t.Fatal(err)
		}
		if high > 0 {
			remaining[p] = high
		}
	}
	s := newSeen()
	if len(remaining) == 0 {
		return s
	}
	if err := c.Subscribe(topic, nil); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(30 * time.Second); len(remaining) > 0 && time.Now().Before(end); {
		if m, ok := c.Poll(100).(*ckafka.Message); ok && m.TopicPartition.Error == nil {
			s.add(string(m.Value))
			if high, ok := remaining[m.TopicPartition.Partition]; ok && int64(m.TopicPartition.Offset)+1 >= high {
				delete(remaining, m.TopicPartition.Partition)
			}
		}
	}
	if len(remaining) > 0 {
		t.Fatalf("reading %q: %d partitions short of their high watermark after 30 s", topic, len(remaining))
	}
	return s
}

// committedOr returns the group's committed sum, or -1 while the broker cannot say (the group
// does not exist yet).
func committedOr(addr string, parts int) int64 {
	sum, err := kafkatest.CommittedSum(addr, "g", "in", parts)
	if err != nil {
		return -1
	}
	return sum
}

// refuseProduce makes the broker refuse every produce to topic with a retriable error
// (librdkafka retries it until message.timeout.ms) until the handle is removed.
func refuseProduce(cl *kafkatest.Cluster, topic string) *kfake.FaultHandle {
	return cl.Kfake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotLeaderForPartition, Count: -1})
}

// TestFaultShutdownDeadLetterRefusing: deliveries to the output topic fail (refused until
// message.timeout.ms) and go to a dead-letter topic that keeps refusing with a retriable error,
// so the dead-letter handler retries without end; then Run's context is cancelled. Run
// returns within the drain and close timeouts, no goroutine is left, and no offset is
// committed past the first record that was neither written nor dead-lettered. The handler
// runs on the pipeline's error-handling goroutine, never on the sink producer's
// delivery-report reader, and its context is cancelled when the close phase gives up: nothing
// else stops it, with a dead-letter producer of its own or with the sink's (the sink's close
// hook only flushes; the producer accepts records until the test closes it after Run).
func TestFaultShutdownDeadLetterRefusing(t *testing.T) {
	for _, own := range []bool{false, true} {
		name := map[bool]string{false: "sink's producer", true: "own producer"}[own]
		t.Run(name, func(t *testing.T) { shutdownDeadLetterRefusing(t, own) })
	}
}

func shutdownDeadLetterRefusing(t *testing.T, ownDLQ bool) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // registered first: runs after the broker and producers closed
	const drain, closeT = 2 * time.Second, 3 * time.Second
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1), kafkatest.Topic("out", 1), kafkatest.Topic("dlq", 1))
	produce(t, cl.Addr(), "in", "a", 10)
	r := startCopy(t, cl.Addr(), copyOpts{dlq: "dlq", ownDLQ: ownDLQ, timeout: 1000,
		pipe: []pipeline.Option{pipeline.WithDrainTimeout(drain), pipeline.WithCloseTimeout(closeT)}})
	kafkatest.WaitFor(t, 30*time.Second, "the first records committed", func() bool { return committedOr(cl.Addr(), 1) == 10 })

	refuseProduce(cl, "out")
	dlqDown := refuseProduce(cl, "dlq")
	produce(t, cl.Addr(), "in", "b", 5) // offsets 10..14: never written, never dead-lettered
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := dlqDown.Wait(ctx, 3); err != nil { // the dead-letter handler is retrying
		t.Fatal(err)
	}
	r.stop()
	began := time.Now()
	err := awaitRun(t, r.done, drain+closeT+5*time.Second)
	t.Logf("Run returned after %v: %v", time.Since(began).Round(time.Millisecond), err)
	if err == nil {
		t.Fatal("Run = nil, want an error: records were neither written nor dead-lettered")
	}
	committed, cerr := kafkatest.Committed(cl.Addr(), "g", "in", 1)
	if cerr != nil {
		t.Fatal(cerr)
	}
	if committed[0] != 10 {
		t.Fatalf("committed offset %d, want 10 (offset 10 was neither written nor dead-lettered)", committed[0])
	}
	if st := r.prod.Stats(); st.DeadLetters != 0 || st.DeliveryErrors == 0 {
		t.Fatalf("producer stats %+v: want failed deliveries and no dead letter", st)
	}
}

// recordAt matches the record a Failure names: topic[partition]@offset.
var recordAt = regexp.MustCompile(`\bin\[(\d+)\]@(\d+)`)

// TestFaultDeliveryFailureNotCommitted: the output topic refuses every produce for 6 s while
// records flow, with message.timeout.ms 2000, so deliveries fail for good. With the default
// error handler Run stops with an error naming a failed record, and no offset is committed
// whose output was not written: for every partition, every input below the committed offset
// is in the output topic. With a dead-letter topic every input ends up in the output or in
// the dead-letter topic, and the commits reach the end.
func TestFaultDeliveryFailureNotCommitted(t *testing.T) {
	const parts, outage = 2, 6 * time.Second
	t.Run("default handler", func(t *testing.T) {
		cl := kafkatest.StartT(t, kafkatest.Topic("in", parts), kafkatest.Topic("out", parts))
		produce(t, cl.Addr(), "in", "a", 100)
		r := startCopy(t, cl.Addr(), copyOpts{timeout: 2000})
		defer r.stop()
		kafkatest.WaitFor(t, 30*time.Second, "the first records committed", func() bool { return committedOr(cl.Addr(), parts) == 100 })
		down := refuseProduce(cl, "out")
		produce(t, cl.Addr(), "in", "b", 100)
		var err error
		returned := false
		select { // the outage lasts 6 s, unless Run stops first
		case err = <-r.done:
			returned = true
		case <-time.After(outage):
		}
		down.Remove()
		produce(t, cl.Addr(), "in", "c", 100)
		if !returned {
			// Run should have stopped on the first failed delivery; give it time to show it
			// does not, while the commits move on.
			select {
			case err = <-r.done:
			case <-time.After(10 * time.Second):
				r.stop()
				err = awaitRun(t, r.done, 60*time.Second)
			}
		}
		in, rerr := kafkatest.ReadMessages(cl.Addr(), "in", 300, 30*time.Second)
		if rerr != nil || len(in) != 300 {
			t.Fatalf("read %d input records: %v", len(in), rerr)
		}
		out := topicValues(t, cl.Addr(), "out", parts)
		committed, cerr := kafkatest.Committed(cl.Addr(), "g", "in", parts)
		if cerr != nil {
			t.Fatal(cerr)
		}
		lost := 0
		for _, m := range in {
			if int64(m.TopicPartition.Offset) < committed[m.TopicPartition.Partition] && out.m[string(m.Value)] == 0 {
				lost++
				t.Errorf("%s (in[%d]@%d) committed (offset %d) but not in the output", m.Value, m.TopicPartition.Partition, m.TopicPartition.Offset, committed[m.TopicPartition.Partition])
			}
		}
		t.Logf("Run: %v; committed %v; %d committed without output", err, committed, lost)
		if !errors.Is(err, stage.ErrNotDelivered) {
			t.Fatalf("Run = %v, want an error wrapping stage.ErrNotDelivered", err)
		}
		at := recordAt.FindStringSubmatch(err.Error())
		if at == nil {
			t.Fatalf("Run's error %q names no input record", err)
		}
		part, _ := strconv.Atoi(at[1])
		off, _ := strconv.ParseInt(at[2], 10, 64)
		for _, m := range in {
			if m.TopicPartition.Partition == int32(part) && int64(m.TopicPartition.Offset) == off {
				if v := string(m.Value); v[0] != 'b' || out.m[v] != 0 {
					t.Fatalf("Run's error names in[%d]@%d = %s: not a record whose delivery failed (in output: %d)", part, off, v, out.m[v])
				}
				return
			}
		}
		t.Fatalf("Run's error names in[%d]@%d, which does not exist", part, off)
	})
	t.Run("dead letter", func(t *testing.T) {
		cl := kafkatest.StartT(t, kafkatest.Topic("in", parts), kafkatest.Topic("out", parts), kafkatest.Topic("dlq", 1))
		want := produce(t, cl.Addr(), "in", "a", 100)
		r := startCopy(t, cl.Addr(), copyOpts{timeout: 2000, dlq: "dlq"})
		defer r.stop()
		kafkatest.WaitFor(t, 30*time.Second, "the first records committed", func() bool { return committedOr(cl.Addr(), parts) == 100 })
		down := refuseProduce(cl, "out")
		for v := range produce(t, cl.Addr(), "in", "b", 100) {
			want[v] = true
		}
		select {
		case err := <-r.done:
			t.Fatalf("Run returned during the outage: %v", err)
		case <-time.After(outage):
		}
		down.Remove()
		for v := range produce(t, cl.Addr(), "in", "c", 100) {
			want[v] = true
		}
		kafkatest.WaitFor(t, 60*time.Second, "commits to reach the end", func() bool { return committedOr(cl.Addr(), parts) == 300 })
		r.stop()
		if err := awaitRun(t, r.done, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		out, dlq := topicValues(t, cl.Addr(), "out", parts), topicValues(t, cl.Addr(), "dlq", 1)
		for v := range want {
			if out.m[v] == 0 && dlq.m[v] == 0 {
				t.Errorf("%s is neither in the output nor in the dead-letter topic", v)
			}
		}
		st := r.prod.Stats()
		t.Logf("producer %+v; output %d values, dead-letter %d", st, out.distinct(), dlq.distinct())
		if st.DeliveryErrors == 0 || st.DeadLetters == 0 {
			t.Fatalf("producer stats %+v: the outage failed no delivery (the test did not test)", st)
		}
	})
}

// TestFaultRunErrorNamesFailedRecord: under OnError(Fail) the 500th record fails after a fast
// stream of records; Run's error still names in[0]@500 after every event, that one included,
// was finished and recycled for other records.
func TestFaultRunErrorNamesFailedRecord(t *testing.T) {
	cl := kafkatest.StartT(t, kafkatest.Topic("in", 1))
	produce(t, cl.Addr(), "in", "v", 2000)
	errPoison := errors.New("poison")
	r := start(t, cl.Addr(), newSeen(), runOpts{group: "g", topic: "in",
		sinkOpt: []stage.Option{stage.WithErrorPolicy(stage.Fail)},
		work: func(_ context.Context, ev *stage.Event) error {
			if ev.Offset == 500 {
				return errPoison
			}
			return nil
		}})
	err := awaitRun(t, r.done, 60*time.Second)
	if !errors.Is(err, errPoison) || !regexp.MustCompile(`stage "work": in\[0\]@500: `).MatchString(err.Error()) {
		t.Fatalf("Run = %v, want the poison error naming in[0]@500", err)
	}
	var f *stage.Failure
	if !errors.As(err, &f) || len(f.Events) != 0 {
		t.Fatalf("Run's error %v: want a *stage.Failure without its (recycled) events", err)
	}
}
