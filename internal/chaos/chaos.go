// Package chaos runs sluice against the embedded broker while injecting random faults (the
// fault suite's scenario 24) and reports what came out against what went in. It serves the
// TestFaultChaos test and `go run ./bench chaos`.
package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Config configures a run. Zero values take the defaults.
type Config struct {
	Duration time.Duration // how long faults are injected; default 10s
	Rate     int           // records produced per second; default 2000
	Every    time.Duration // mean time between faults; default 1s
	Seed     uint64        // random seed; default from the clock
	Logger   *slog.Logger  // default: discard
	// CommitMetadataMaxBytes is the members' kafka.Config.CommitMetadataMaxBytes (0: the
	// source's default; negative: off).
	CommitMetadataMaxBytes int
	// Progress, if set, is called about once a second with the report so far.
	Progress func(Report)
}

// Report is the outcome; its JSON names are the contract of chaos.json.
type Report struct {
	Scenario        string         `json:"scenario"`
	DurationS       float64        `json:"duration_s"`
	FaultsInjected  int            `json:"faults_injected"`
	Produced        int64          `json:"produced"`
	ProcessedUnique int64          `json:"processed_unique"`
	Lost            int64          `json:"lost"`
	Duplicates      int64          `json:"duplicates"`
	PeakRSSBytes    int64          `json:"peak_rss_bytes"`
	Faults          map[string]int `json:"faults"`
	Seed            uint64         `json:"seed"`
	Note            string         `json:"note"`
}

const (
	topic      = "chaos"
	partitions = 6
	group      = "chaos"
)

// Run starts a three-broker embedded cluster, a paced producer and two sluice consumers of one
// group, injects a random fault about every cfg.Every for cfg.Duration, then stops producing,
// lets the consumers finish and compares.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 2000
	}
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	rep := Report{Scenario: "chaos", Faults: map[string]int{}, Seed: cfg.Seed,
		Note: "peak_rss_bytes is this process's VmHWM, which includes the embedded broker"}
	cl, err := kafkatest.Start(kafkatest.Brokers(3), kafkatest.Topic(topic, partitions))
	if err != nil {
		return rep, err
	}
	defer cl.Close()
	h := &harness{cfg: cfg, addr: cl.Addr(), seen: map[string]int{}}
	start := time.Now()

	prodCtx, stopProducing := context.WithCancel(ctx)
	var prodWG sync.WaitGroup
	prodWG.Add(1)
	var prodErr error
	go func() { defer prodWG.Done(); prodErr = h.produce(prodCtx) }()

	for range 2 {
		if err := h.addMember(); err != nil {
			stopProducing()
			prodWG.Wait()
			return rep, err
		}
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed>>1))
	faults := h.faults(cl)
	names := faultNames(faults)
	tick := time.NewTicker(cfg.Every)
	for time.Since(start) < cfg.Duration && ctx.Err() == nil {
		<-tick.C
		name := names[rng.IntN(len(names))]
		if err := faults[name](rng); err != nil {
			cfg.Logger.Warn("chaos: fault failed", "fault", name, "err", err)
			continue
		}
		rep.Faults[name]++
		rep.FaultsInjected++
		if cfg.Progress != nil {
			cfg.Progress(h.report(rep, start))
		}
	}
	tick.Stop()
	stopProducing()
	prodWG.Wait()
	if prodErr != nil {
		return rep, prodErr
	}
	// Recover: no more faults; make sure a member runs; wait for everything produced.
	if h.members() == 0 {
		if err := h.addMember(); err != nil {
			return rep, err
		}
	}
	if !awaitAll(ctx, h.unique, h.produced.Load(), drainIdle, func() {
		if cfg.Progress != nil {
			cfg.Progress(h.report(rep, start))
		}
	}) {
		cfg.Logger.Warn("chaos: consumers made no progress for a while: stopping them with records unprocessed",
			"unprocessed", h.produced.Load()-h.unique(), "idle", drainIdle)
		h.logMembers()
	}
	if err := h.stopAll(); err != nil {
		return h.report(rep, start), err
	}
	h.logLost()
	return h.report(rep, start), nil
}

// harness holds the producer, the consumers and what they saw.
type harness struct {
	cfg      Config
	addr     string
	produced atomic.Int64

	mu      sync.Mutex // guards seen, where, started and runs
	seen    map[string]int
	where   []uint64 // record i's partition<<48 | offset once delivered (+1; 0: not delivered), to name lost ones
	started int      // members started, to name them in logs
	runs    []*member
}

type member struct {
	id   int
	src  *kafka.Source
	stop context.CancelFunc
	done chan error
}

func (h *harness) report(rep Report, start time.Time) Report {
	h.mu.Lock()
	defer h.mu.Unlock()
	rep.DurationS = time.Since(start).Seconds()
	rep.Produced = h.produced.Load()
	rep.ProcessedUnique, rep.Duplicates = int64(len(h.seen)), 0
	for _, n := range h.seen {
		rep.Duplicates += int64(n - 1)
	}
	rep.Lost = rep.Produced - rep.ProcessedUnique
	rep.PeakRSSBytes = peakRSS()
	return rep
}

func (h *harness) unique() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return int64(len(h.seen))
}

func (h *harness) members() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.runs)
}

// produce writes "c-<i>" records at cfg.Rate until ctx ends; produced counts deliveries.
func (h *harness) produce(ctx context.Context) error {
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": h.addr, "enable.idempotence": true, "acks": "all", "linger.ms": 5, "log_level": 3})
	if err != nil {
		return err
	}
	defer p.Close()
	reports := make(chan ckafka.Event, 4096)
	var pending sync.WaitGroup
	pending.Add(1)
	go func() {
		defer pending.Done()
		for e := range reports {
			if m, ok := e.(*ckafka.Message); ok && m.TopicPartition.Error == nil {
				h.produced.Add(1)
				h.delivered(m)
			}
		}
	}()
	t := topic
	interval := time.Second / time.Duration(h.cfg.Rate)
	next := time.Now()
	sent := 0
	for i := 0; ctx.Err() == nil; i++ {
		m := &ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &t, Partition: ckafka.PartitionAny},
			Key: []byte("k" + strconv.Itoa(i%101)), Value: []byte("c-" + strconv.Itoa(i))}
		if err := p.Produce(m, reports); err != nil {
			return fmt.Errorf("chaos: produce: %w", err)
		}
		sent++
		if next = next.Add(interval); time.Until(next) > 0 {
			time.Sleep(time.Until(next))
		}
	}
	for p.Flush(1000) > 0 {
	}
	close(reports)
	pending.Wait()
	if lost := int64(sent) - h.produced.Load(); lost != 0 {
		h.cfg.Logger.Warn("chaos: records not delivered by the producer (not counted as produced)", "records", lost)
	}
	return nil
}

// addMember starts one more consumer pipeline of the group.
func (h *harness) addMember() error {
	h.mu.Lock()
	h.started++
	id := h.started
	log := h.cfg.Logger.With("member", id)
	h.mu.Unlock()
	log.Info("chaos: member starts")
	src, err := kafka.NewSource(kafka.Config{Brokers: h.addr, GroupID: group, Topics: []string{topic}, Logger: log,
		Budget: 8 << 20, MaxMessageBytes: 256 << 10, CommitInterval: 200 * time.Millisecond, CommitMetadataMaxBytes: h.cfg.CommitMetadataMaxBytes,
		Overrides: kafkatest.FastGroup()})
	if err != nil {
		return err
	}
	b := pipeline.New(src, pipeline.WithLogger(h.cfg.Logger), pipeline.WithDrainTimeout(20*time.Second))
	pipeline.To(b.Source(), stage.Sink("record", func(_ context.Context, ev *stage.Event) error {
		time.Sleep(100 * time.Microsecond)
		h.mu.Lock()
		h.seen[string(ev.Value)]++
		n := h.seen[string(ev.Value)]
		h.mu.Unlock()
		if n > 1 {
			log.Debug("chaos: duplicate", "partition", ev.Partition, "offset", ev.Offset)
		}
		return nil
	}, stage.WithConcurrency(4)))
	p, err := b.Build()
	if err != nil {
		src.Close(context.Background())
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{id: id, src: src, stop: cancel, done: make(chan error, 1)}
	go func() { m.done <- p.Run(ctx) }()
	h.mu.Lock()
	h.runs = append(h.runs, m)
	h.mu.Unlock()
	return nil
}

// stopMember stops the oldest member (drain, commit, leave the group).
func (h *harness) stopMember() error {
	h.mu.Lock()
	if len(h.runs) == 0 {
		h.mu.Unlock()
		return nil
	}
	m := h.runs[0]
	h.runs = h.runs[1:]
	h.mu.Unlock()
	m.stop()
	return <-m.done
}

func (h *harness) stopAll() error {
	for h.members() > 0 {
		if err := h.stopMember(); err != nil {
			return err
		}
	}
	return nil
}

// faults are the fault kinds the run picks from.
func (h *harness) faults(cl *kafkatest.Cluster) map[string]func(*rand.Rand) error {
	k := cl.Kfake()
	fault := func(key kmsg.Key, err *kerr.Error, n int) func(*rand.Rand) error {
		return func(*rand.Rand) error {
			k.Fault(kfake.Fault{Keys: []kmsg.Key{key}, Err: err, Count: n})
			return nil
		}
	}
	return map[string]func(*rand.Rand) error{
		"commit_errors":     fault(kmsg.OffsetCommit, kerr.CoordinatorNotAvailable, 3),
		"not_coordinator":   fault(kmsg.OffsetCommit, kerr.NotCoordinator, 2),
		"fetch_errors":      fault(kmsg.Fetch, kerr.NotLeaderForPartition, 5),
		"heartbeat_errors":  fault(kmsg.Heartbeat, kerr.RebalanceInProgress, 2),
		"leaders_shuffled":  func(*rand.Rand) error { k.ShufflePartitionLeaders(); return nil },
		"coordinator_moved": func(*rand.Rand) error { k.RehashCoordinators(); return nil },
		"partition_moved": func(r *rand.Rand) error {
			p := int32(r.IntN(partitions))
			return k.MoveTopicPartition(topic, p, (k.LeaderFor(topic, p)+1)%3)
		},
		"slow_fetches": func(*rand.Rand) error {
			var n atomic.Int32
			k.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
				if n.Add(1) < 5 {
					k.KeepControl()
					k.SleepControl(func() { time.Sleep(200 * time.Millisecond) })
				}
				return nil, nil, false
			})
			return nil
		},
		"member_restart": func(*rand.Rand) error {
			if err := h.stopMember(); err != nil {
				return err
			}
			return h.addMember()
		},
		"member_join_leave": func(*rand.Rand) error {
			if h.members() >= 3 {
				return h.stopMember()
			}
			return h.addMember()
		},
	}
}

// peakRSS returns this process's peak resident set (VmHWM), or 0.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
