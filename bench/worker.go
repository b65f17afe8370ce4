package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// WorkerResult is what a worker prints as its last stdout line.
type WorkerResult struct {
	Mode     string  `json:"mode"`
	Count    int64   `json:"count"`
	Elapsed  float64 `json:"elapsed_s"` // first to last message
	Bytes    int64   `json:"bytes"`
	Produced int64   `json:"produced,omitempty"`
	// CPU is the process's CPU time (user + system, every thread: Go and librdkafka) from the
	// first message to the last expected one (0 without --expect).
	CPU float64 `json:"cpu_s,omitempty"`
	// The copy worker (bench eos): its first message's time, and its transactions.
	FirstUnixNs int64  `json:"first_unix_ns,omitempty"`
	TxnCommits  uint64 `json:"txn_commits,omitempty"`
	TxnAborts   uint64 `json:"txn_aborts,omitempty"`
	Stalls      int64  `json:"stalls,omitempty"`
	StalledNs   int64  `json:"stalled_ns,omitempty"`
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// sinkLog appends (partition int32, offset int64) records, one write per record, so a
// SIGKILLed worker leaves exactly what its sink received.
type sinkLog struct {
	mu sync.Mutex
	f  *os.File
}

func (s *sinkLog) record(p int32, off int64) {
	if s == nil {
		return
	}
	var b [12]byte
	binary.LittleEndian.PutUint32(b[:4], uint32(p))
	binary.LittleEndian.PutUint64(b[4:], uint64(off))
	s.mu.Lock()
	_, _ = s.f.Write(b[:])
	s.mu.Unlock()
}

// counter measures count and first..last elapsed time.
type counter struct {
	n, bytes    atomic.Int64
	first, last atomic.Int64 // unix nanos
	cpu0, cpu1  atomic.Int64 // process CPU nanos at the first and at the last expected message
}

func (c *counter) add(b int) int64 {
	now := time.Now().UnixNano()
	if c.first.CompareAndSwap(0, now) {
		c.cpu0.Store(processCPU())
	}
	c.last.Store(now)
	c.bytes.Add(int64(b))
	return c.n.Add(1)
}

func (c *counter) result(mode string) WorkerResult {
	el := float64(c.last.Load()-c.first.Load()) / 1e9
	var cpu float64
	if c1 := c.cpu1.Load(); c1 > 0 {
		cpu = float64(c1-c.cpu0.Load()) / 1e9
	}
	return WorkerResult{Mode: mode, Count: c.n.Load(), Elapsed: el, Bytes: c.bytes.Load(), CPU: cpu}
}

// gcStats prints the run's garbage-collection cost to stderr (SLUICE_BENCH_GCSTATS=1).
func gcStats(mode string) {
	ss := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/cpu/classes/total:cpu-seconds"}, {Name: "/gc/heap/live:bytes"}, {Name: "/sched/goroutines:goroutines"},
		{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/allocs:objects"}}
	metrics.Read(ss)
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Fprintf(os.Stderr, "\n%s rusage: minflt=%d utime=%v stime=%v", mode, ru.Minflt, time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()))
	fmt.Fprintf(os.Stderr, "\n%s gc: cycles=%d gc_cpu=%.3fs of go_cpu=%.3fs live=%d goroutines=%d allocs=%d B in %d objects\n", mode,
		ss[0].Value.Uint64(), ss[1].Value.Float64(), ss[2].Value.Float64(), ss[3].Value.Uint64(), ss[4].Value.Uint64(), ss[5].Value.Uint64(), ss[6].Value.Uint64())
}

// processCPU returns the process's user + system CPU time in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func runWorker(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	mode := fs.String("mode", "sluice", "naive | sluice | bare | sluice-fast | naive-kafka | sluice-kafka")
	output := fs.String("output", "", "naive-kafka, sluice-kafka: the output topic")
	brokers := fs.String("brokers", "", "bootstrap servers")
	topic := fs.String("topic", "", "topic")
	group := fs.String("group", "", "group id")
	budget := fs.Int64("budget", 0, "sluice budget bytes (0: none given, kafka.Config's default)")
	slots := fs.Int("slots", 10, "sink concurrency")
	sleep := fs.Duration("sleep", 20*time.Millisecond, "sink time per message")
	sinkFile := fs.String("sink-file", "", "append sunk (partition, offset) here")
	expect := fs.Int64("expect", 0, "stop after this many messages (0: until SIGTERM)")
	maxDur := fs.Duration("max-duration", 0, "stop this long after the first message (0: no limit)")
	capacity := fs.Int("capacity", 0, "sink input edge capacity (0: stage default)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run here")
	instanceID := fs.String("instance-id", "", "sluice: group.instance.id (static membership)")
	statsFile := fs.String("stats-file", "", "sluice: append assignment snapshots (JSON lines) here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var sl *sinkLog
	if *sinkFile != "" {
		f, err := os.OpenFile(*sinkFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		sl = &sinkLog{f: f}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var c counter
	done := func() {
		n := c.n.Load()
		if *expect > 0 && n >= *expect {
			c.cpu1.CompareAndSwap(0, processCPU())
			cancel()
		}
	}
	if *maxDur > 0 {
		go func() {
			for c.first.Load() == 0 && ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
			select {
			case <-ctx.Done():
			case <-time.After(*maxDur):
				cancel()
			}
		}()
	}
	var err error
	switch *mode {
	case "naive":
		err = naive(ctx, *brokers, *topic, *group, *slots, *sleep, sl, &c)
	case "bare":
		err = bare(ctx, *brokers, *topic, *group, *budget, &c, done)
	case "sluice", "sluice-fast":
		fast := *mode == "sluice-fast"
		m := membership{instanceID: *instanceID, statsFile: *statsFile}
		err = sluice(ctx, *brokers, *topic, *group, *budget, *slots, *capacity, *sleep, fast, m, sl, &c, done)
	case "naive-kafka":
		err = naiveKafka(ctx, *brokers, *topic, *output, *group, &c)
	case "sluice-kafka":
		err = sluiceKafka(ctx, *brokers, *topic, *output, *group, *budget, *capacity, &c)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		return err
	}
	if os.Getenv("SLUICE_BENCH_GCSTATS") != "" {
		gcStats(*mode)
	}
	return json.NewEncoder(stdout).Encode(c.result(*mode))
}

// autoCommitConsumer is a plain librdkafka consumer with auto-commit, subscribed to topic.
func autoCommitConsumer(brokers, topic, group string) (*ckafka.Consumer, error) {
	cons, err := ckafka.NewConsumer(&ckafka.ConfigMap{
		"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": true,
		"auto.offset.reset": "earliest", "log_level": 3,
	})
	if err != nil {
		return nil, err
	}
	if err := cons.SubscribeTopics([]string{topic}, nil); err != nil {
		cons.Close()
		return nil, err
	}
	return cons, nil
}

// naive is what the seed did: auto-commit, a goroutine per message waiting on a 10-slot
// semaphore. No pushback: messages pile up in memory. On SIGTERM it closes the consumer
// (which commits the auto-stored offsets) without waiting for the pending goroutines.
func naive(ctx context.Context, brokers, topic, group string, slots int, sleep time.Duration, sl *sinkLog, c *counter) error {
	cons, err := autoCommitConsumer(brokers, topic, group)
	if err != nil {
		return err
	}
	sem := make(chan struct{}, slots)
	for ctx.Err() == nil {
		m, ok := cons.Poll(100).(*ckafka.Message)
		if !ok || m.TopicPartition.Error != nil {
			continue
		}
		go func(m *ckafka.Message) {
			sem <- struct{}{}
			time.Sleep(sleep)
			_ = m.Value // the goroutine keeps the message alive
			<-sem
			sl.record(m.TopicPartition.Partition, int64(m.TopicPartition.Offset))
			c.add(len(m.Value))
		}(m)
	}
	return cons.Close()
}

// bare is a plain confluent-kafka-go Poll loop (auto-commit, no framework) with the same
// librdkafka fetch configuration a sluice Source of the same budget uses, so that the e2e
// ratio measures the framework and not librdkafka settings: with librdkafka's defaults
// (fetch.queue.backoff.ms 1000) the bare loop is bimodal here, 170 k or 1 M msgs/s of 100 B
// from one run to the next.
func bare(ctx context.Context, brokers, topic, group string, budget int64, c *counter, done func()) error {
	if budget == 0 {
		budget = kafka.DefaultBudget // what a Source given no budget plans with
	}
	mem := kafka.Plan(budget, kafka.DefaultMaxMessageBytes)
	cons, err := ckafka.NewConsumer(&ckafka.ConfigMap{
		"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": true,
		"auto.offset.reset": "earliest", "log_level": 3,
		"queued.max.messages.kbytes": int(mem.Prefetch / 1024),
		"fetch.max.bytes":            int(mem.FetchMaxBytes),
		"max.partition.fetch.bytes":  int(mem.PartitionFetchBytes),
		"receive.message.max.bytes":  int(mem.FetchMaxBytes + 1<<20),
		"fetch.queue.backoff.ms":     10,
	})
	if err != nil {
		return err
	}
	if err := cons.SubscribeTopics([]string{topic}, nil); err != nil {
		cons.Close()
		return err
	}
	for ctx.Err() == nil {
		m, ok := cons.Poll(100).(*ckafka.Message)
		if !ok || m.TopicPartition.Error != nil {
			continue
		}
		c.add(len(m.Key) + len(m.Value))
		done()
	}
	return cons.Close()
}

// sluice: kafka.Source → Sink (fast: a no-op sink that counts; else the slow I/O-like sink).
func sluice(ctx context.Context, brokers, topic, group string, budget int64, slots, capacity int, sleep time.Duration, fast bool, m membership, sl *sinkLog, c *counter, done func()) error {
	src, err := kafka.NewSource(kafka.Config{
		Brokers: brokers, GroupID: group, Topics: []string{topic}, Budget: budget,
		CommitInterval: time.Second, Logger: quietLogger(), GroupInstanceID: m.instanceID,
	})
	if err != nil {
		return err
	}
	ctx, stopSnapshots, err := m.watch(ctx, src)
	if err != nil {
		src.Close(context.Background())
		return err
	}
	defer stopSnapshots()
	b := pipeline.New(src, pipeline.WithLogger(quietLogger()))
	slow := func(ctx context.Context, ev *stage.Event) error {
		time.Sleep(sleep)
		sl.record(ev.Partition, ev.Offset)
		c.add(len(ev.Key) + len(ev.Value))
		done()
		return nil
	}
	var opts []stage.Option
	if capacity > 0 {
		opts = append(opts, stage.WithCapacity(capacity))
	}
	if fast {
		// One no-op stage that counts, as the bare loop counts; commits follow completion.
		pipeline.To(b.Source(), stage.Sink("noop", func(_ context.Context, ev *stage.Event) error {
			c.add(len(ev.Key) + len(ev.Value))
			done()
			return nil
		}, opts...))
	} else {
		pipeline.To(b.Source(), stage.Sink("sink", slow, append(opts, stage.WithConcurrency(slots))...))
	}
	p, err := b.Build()
	if err != nil {
		src.Close(context.Background())
		return err
	}
	err = p.Run(ctx)
	st := src.Stats()
	ps := p.Stats()
	fmt.Fprintf(os.Stderr, "\nsluice worker: source pauses=%d commits=%d errors=%d stale=%d bursts=%d (mean %.1f); pipeline emitted=%d completed=%d high_water=%d/%d bytes\n",
		st.Pauses, st.Commits, st.Errors, st.Stale, st.Bursts, float64(st.BurstMessages)/float64(max(st.Bursts, 1)), ps.Emitted, ps.Completed, ps.HighWaterBytes, ps.BudgetBytes)
	return err
}

// runProduce is the paced load generator.
func runProduce(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "bootstrap servers")
	topic := fs.String("topic", "", "topic")
	rate := fs.Float64("rate", 980, "messages per second (0: as fast as possible)")
	size := fs.Int("size", 40<<10, "message bytes")
	count := fs.Int64("count", 0, "stop after this many (0: until duration)")
	dur := fs.Duration("duration", 0, "stop after this long (0: until count)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	n, err := produce(*brokers, *topic, *rate, *size, *count, *dur)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(WorkerResult{Mode: "produce", Produced: n})
}

func produce(brokers, topic string, rate float64, size int, count int64, dur time.Duration) (int64, error) {
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{
		"bootstrap.servers": brokers, "linger.ms": 5, "log_level": 3,
		"queue.buffering.max.kbytes": 256 << 10, "message.max.bytes": max(size+(64<<10), 1000000),
		"go.delivery.reports": true, "go.delivery.report.fields": "none",
	})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	var failed atomic.Int64
	go func() {
		for e := range p.Events() {
			if m, ok := e.(*ckafka.Message); ok && m.TopicPartition.Error != nil {
				failed.Add(1)
			}
		}
	}()
	val := make([]byte, size)
	for i := range val {
		val[i] = byte(i * 7)
	}
	start := time.Now()
	var n int64
	send := func() error {
		for {
			err := p.Produce(&ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny}, Value: val}, nil)
			if err == nil {
				n++
				return nil
			}
			if ke, ok := err.(ckafka.Error); ok && ke.Code() == ckafka.ErrQueueFull {
				p.Flush(10)
				continue
			}
			return err
		}
	}
	for {
		el := time.Since(start)
		if (dur > 0 && el >= dur) || (count > 0 && n >= count) {
			break
		}
		target := count
		if rate > 0 {
			target = int64(el.Seconds() * rate)
			if count > 0 {
				target = min(target, count)
			}
		} else if target == 0 {
			target = n + 1000
		}
		for n < target {
			if err := send(); err != nil {
				return n, err
			}
		}
		if rate > 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	for p.Flush(1000) > 0 {
	}
	return n - failed.Load(), nil
}
