package main

// The seed scenario with a Kafka downstream (`bench seed --downstream kafka`): the incident's
// own path. The consumer copies every input record to an output topic on a broker that takes
// only --output-rate records/s (kfakebroker --produce-rate), so the producer, not a sleeping
// sink, is what cannot keep up.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// srcHeader names the header every output record carries: its input record's partition
// (uint32) and offset (uint64), little endian, so that reading the output topic tells what was
// copied, lost or copied twice.
const srcHeader = "seed-src"

func srcValue(p int32, off int64) []byte {
	b := make([]byte, 12)
	binary.LittleEndian.PutUint32(b[:4], uint32(p))
	binary.LittleEndian.PutUint64(b[4:], uint64(off))
	return b
}

// seedKafkaRun is seedRun with the Kafka downstream: a fresh broker with the input topic and
// the rate-limited output topic, the paced load generator, and the worker in mode
// name+"-kafka". Progress is the output topic's high watermarks (what the broker accepted);
// throughput counts what was accepted within the window (not the drain after it); lost and
// duplicates compare the input's committed offsets with the output records' seed-src headers.
func seedKafkaRun(o seedOpts, name string) (SeedRun, error) {
	run := newSeedRun(o, name)
	topic := fmt.Sprintf("seed-kafka-%s-%d", name, time.Now().UnixNano())
	output, group := topic+"-out", topic+"-g"
	var rate []string
	if o.brokers == "" {
		rate = []string{"--produce-rate", fmt.Sprintf("%s=%g", output, o.outputRate)}
	} else {
		fmt.Fprintf(os.Stderr, "seed: --brokers given: the output topic takes what that cluster takes (no --output-rate)\n")
	}
	br, err := startBrokerWith(o.brokers, o.trim, rate, fmt.Sprintf("%s:%d", topic, o.partitions), fmt.Sprintf("%s:%d", output, o.partitions))
	if err != nil {
		return run, err
	}
	defer br.stop()
	wm, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": br.addr, "group.id": group + "-wm", "log_level": 3})
	if err != nil {
		return run, err
	}
	defer wm.Close()
	accepted := func() int64 { // the output's records so far (0 on an error: a sample only)
		var n int64
		for p := range o.partitions {
			_, hi, err := wm.QueryWatermarkOffsets(output, int32(p), 5000)
			if err != nil {
				return 0
			}
			n += hi
		}
		return n
	}
	args := []string{"worker", "--mode", name + "-kafka", "--brokers", br.addr, "--topic", topic, "--output", output,
		"--group", group, "--budget", fmt.Sprint(o.budget), "--capacity", fmt.Sprint(o.capacity)}
	if dir := os.Getenv("SLUICE_BENCH_CPUPROFILE_DIR"); dir != "" { // for finding where a run's CPU goes
		args = append(args, "--cpuprofile", filepath.Join(dir, name+"-kafka.pprof"))
	}
	w, err := startChild(true, args...)
	if err != nil {
		return run, err
	}
	prod, err := startChild(false, "produce", "--brokers", br.addr, "--topic", topic, "--rate", fmt.Sprint(o.rate),
		"--size", fmt.Sprint(o.size), "--duration", o.duration.String())
	if err != nil {
		w.kill()
		return run, err
	}
	inWindow, err := measureRun(o, &run, w, prod, accepted, fmt.Sprintf("[seed --downstream kafka %s]", name), "output")
	if err != nil {
		return run, err
	}
	committed, hwm, err := offsets(br.addr, group, topic, o.partitions)
	if err != nil {
		return run, err
	}
	sunk, total, err := readOutput(br.addr, output, o.partitions)
	if err != nil {
		return run, err
	}
	run.Processed = total
	run.Throughput = float64(inWindow) / run.RunSeconds
	account(&run, committed, hwm, sunk)
	return run, nil
}

// readOutput reads topic from the beginning to its high watermarks and returns, per input
// partition, how many output records name each input offset (srcHeader), and the number of
// output records. Records without the header are counted but name nothing.
func readOutput(addr, topic string, parts int) (map[int32]map[int64]int, int64, error) {
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": addr, "group.id": topic + "-check",
		"enable.auto.commit": false, "log_level": 3, "queued.max.messages.kbytes": 32 << 10})
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	var tps []ckafka.TopicPartition
	left := 0
	for p := range parts {
		_, hi, err := c.QueryWatermarkOffsets(topic, int32(p), 15000)
		if err != nil {
			return nil, 0, err
		}
		if hi > 0 {
			tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: int32(p), Offset: ckafka.OffsetBeginning})
			left += int(hi)
		}
	}
	if err := c.Assign(tps); err != nil {
		return nil, 0, err
	}
	m := map[int32]map[int64]int{}
	var n int64
	last := time.Now()
	for left > 0 {
		if time.Since(last) > time.Minute {
			return nil, 0, fmt.Errorf("reading %s: no record for a minute with %d left", topic, left)
		}
		msg, ok := c.Poll(100).(*ckafka.Message)
		if !ok || msg.TopicPartition.Error != nil {
			continue
		}
		last = time.Now()
		left--
		n++
		for _, h := range msg.Headers {
			if h.Key == srcHeader && len(h.Value) == 12 {
				p := int32(binary.LittleEndian.Uint32(h.Value[:4]))
				off := int64(binary.LittleEndian.Uint64(h.Value[4:]))
				if m[p] == nil {
					m[p] = map[int64]int{}
				}
				m[p][off]++
			}
		}
	}
	return m, n, nil
}

// naiveKafka is the incident's producer path written the obvious way: auto-commit, a
// goroutine per message that Produces the copy with librdkafka's defaults (a 1 GiB queue,
// 100 000 messages) and, on ErrQueueFull, sleeps 10 ms and tries again. Nothing pushes back:
// the queue fills, then the goroutines and their messages pile up.
func naiveKafka(ctx context.Context, brokers, topic, output, group string, c *counter) error {
	cons, err := autoCommitConsumer(brokers, topic, group)
	if err != nil {
		return err
	}
	prod, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	if err != nil {
		cons.Close()
		return err
	}
	reports := make(chan struct{})
	go func() {
		defer close(reports)
		for e := range prod.Events() {
			if m, ok := e.(*ckafka.Message); ok && m.TopicPartition.Error == nil {
				c.add(len(m.Value))
			}
		}
	}()
	var retries atomic.Int64
	for ctx.Err() == nil {
		m, ok := cons.Poll(100).(*ckafka.Message)
		if !ok || m.TopicPartition.Error != nil {
			continue
		}
		go func(m *ckafka.Message) {
			out := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &output, Partition: ckafka.PartitionAny},
				Key: m.Key, Value: m.Value, Headers: []ckafka.Header{{Key: srcHeader, Value: srcValue(m.TopicPartition.Partition, int64(m.TopicPartition.Offset))}}}
			for {
				err := prod.Produce(out, nil)
				var ke ckafka.Error
				if err == nil || !errors.As(err, &ke) || ke.Code() != ckafka.ErrQueueFull {
					return
				}
				retries.Add(1)
				time.Sleep(10 * time.Millisecond)
			}
		}(m)
	}
	err = cons.Close()
	prod.Flush(5000)
	prod.Close()
	<-reports
	fmt.Fprintf(os.Stderr, "\nnaive-kafka worker: %d ErrQueueFull retries\n", retries.Load())
	return err
}

// sluiceKafka is the copy pipeline of the README: source → Map("copy") → the producer sink
// (src.NewProducer: the source's budget, its producer-queue share), default settings but the
// budget. The sink's records complete their events on delivery, so the source commits only
// what the output topic has.
func sluiceKafka(ctx context.Context, brokers, topic, output, group string, budget int64, capacity int, c *counter) error {
	src, err := kafka.NewSource(kafka.Config{
		Brokers: brokers, GroupID: group, Topics: []string{topic}, Budget: budget,
		CommitInterval: time.Second, Logger: quietLogger(),
	})
	if err != nil {
		return err
	}
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: output, Overrides: envOverrides("SLUICE_BENCH_PRODUCER_OVERRIDES")})
	if err != nil {
		src.Close(context.Background())
		return err
	}
	defer prod.Close(context.Background())
	var opts []stage.Option
	if capacity > 0 {
		opts = append(opts, stage.WithCapacity(capacity))
	}
	b := pipeline.New(src, pipeline.WithLogger(quietLogger()))
	recs := pipeline.Then(b.Source(), stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		c.add(len(ev.Value)) // handed to the producer (the output's count is what the broker took)
		return kafka.Record{Key: ev.Key, Value: ev.Value, Headers: []stage.Header{{Key: srcHeader, Value: srcValue(ev.Partition, ev.Offset)}}}, nil
	}))
	pipeline.To(recs, prod.Sink("produce", opts...))
	p, err := b.Build()
	if err != nil {
		src.Close(context.Background())
		return err
	}
	if os.Getenv("SLUICE_BENCH_MEMTRACE") != "" {
		stop := memTrace(func() string {
			st, ps, prs := src.Stats(), p.Stats(), prod.Stats()
			return fmt.Sprintf("in_flight=%.1fMiB pauses=%d rx=%dMiB queue_full=%d outstanding=%d prefetch=%.1fMiB", mib(ps.InFlightBytes), st.Pauses, st.RxBytes>>20, prs.QueueFull, prs.Outstanding, mib(fetchqBytes(st.Raw)))
		})
		defer stop()
	}
	err = p.Run(ctx)
	st, ps, prs := src.Stats(), p.Stats(), prod.Stats()
	fmt.Fprintf(os.Stderr, "\nsluice-kafka worker: source pauses=%d commits=%d rx=%d MiB bursts=%d; pipeline emitted=%d completed=%d high_water=%d/%d bytes; producer queue_full=%d delivery_errors=%d\n",
		st.Pauses, st.Commits, st.RxBytes>>20, st.Bursts, ps.Emitted, ps.Completed, ps.HighWaterBytes, ps.BudgetBytes, prs.QueueFull, prs.DeliveryErrors)
	return err
}

// memTrace prints, every 2 s until stop, the process's RSS against the Go runtime's own memory
// (live heap, heap in use, everything the runtime mapped) and line(): what is left of the RSS
// is C (librdkafka). For finding where the memory is (SLUICE_BENCH_MEMTRACE=1).
func memTrace(line func() string) (stop func()) {
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		ss := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"},
			{Name: "/memory/classes/heap/released:bytes"}}
		n := 0
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			metrics.Read(ss)
			if n++; n == 10 && os.Getenv("SLUICE_BENCH_HEAPPROFILE") != "" { // at 20 s
				if f, err := os.Create(os.Getenv("SLUICE_BENCH_HEAPPROFILE")); err == nil {
					_ = pprof.WriteHeapProfile(f)
					f.Close()
				}
			}
			rss, _ := readRSS(os.Getpid())
			goMapped := int64(ss[2].Value.Uint64() - ss[3].Value.Uint64())
			fmt.Fprintf(os.Stderr, "memtrace rss=%.1fMiB go_live=%.1fMiB go_objects=%.1fMiB go_mapped=%.1fMiB c~=%.1fMiB %s\n",
				mib(rss), mib(int64(ss[0].Value.Uint64())), mib(int64(ss[1].Value.Uint64())), mib(goMapped), mib(rss-goMapped), line())
		}
	}()
	return func() { close(done); <-ended }
}

// fetchqBytes sums the partitions' fetchq_size (prefetched bytes) in librdkafka statistics.
func fetchqBytes(raw string) int64 {
	var st struct {
		Topics map[string]struct {
			Partitions map[string]struct {
				FetchqSize int64 `json:"fetchq_size"`
			} `json:"partitions"`
		} `json:"topics"`
	}
	if json.Unmarshal([]byte(raw), &st) != nil {
		return 0
	}
	var n int64
	for _, t := range st.Topics {
		for _, p := range t.Partitions {
			n += p.FetchqSize
		}
	}
	return n
}

// envOverrides parses the variable name ("key=value,key=value") into librdkafka overrides,
// for experiments; nil when unset.
func envOverrides(name string) map[string]any {
	v := os.Getenv(name)
	if v == "" {
		return nil
	}
	m := map[string]any{}
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		m[k] = val
	}
	return m
}
