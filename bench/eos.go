package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// EOSRun is one mode of eos.json.
type EOSRun struct {
	Mode             string  `json:"mode"` // "at-least-once" | "exactly-once"
	CommitIntervalMs int64   `json:"commit_interval_ms"`
	MsgsPerS         float64 `json:"msgs_per_s"`
	P50LatencyMs     float64 `json:"p50_latency_ms"`
	P99LatencyMs     float64 `json:"p99_latency_ms"`
	Lost             int64   `json:"lost"`
	Duplicates       int64   `json:"duplicates"`
	Committed        int64   `json:"committed"` // inputs below the group's committed offsets at the end
	Seen             int64   `json:"seen"`      // outputs the read_committed reader received
	RunSeconds       float64 `json:"run_s"`
}

// EOSResult is eos.json.
type EOSResult struct {
	Scenario     string   `json:"scenario"`
	MessageBytes int      `json:"message_bytes"`
	Partitions   int      `json:"partitions"`
	Records      int      `json:"records"`
	Runs         []EOSRun `json:"runs"`
}

// runEOS measures one copy pipeline (a pre-filled input topic to an output topic) at-least-once
// and exactly-once: throughput and latency as a read_committed reader of the output sees them,
// and lost and duplicated inputs. Each mode gets its own input topic, filled just before its
// run, so that its latencies (from each input record's timestamp: mostly the time the record
// waited in the backlog) compare with the other modes'. A run lasts until the reader saw every
// input, or --duration.
func runEOS(args []string) error {
	fs := flag.NewFlagSet("eos", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "bootstrap servers (default: embedded kfakebroker process)")
	out := fs.String("out", "bench/results", "output directory")
	dur := fs.Duration("duration", 20*time.Second, "cap of one mode's run (it ends sooner once the reader saw every input)")
	records := fs.Int("records", 200000, "records pre-filled into each mode's input topic")
	size := fs.Int("size", 1024, "record bytes")
	parts := fs.Int("partitions", 8, "partitions of the input and output topics")
	if err := fs.Parse(args); err != nil {
		return err
	}
	suffix := time.Now().UnixNano()
	modes := []struct {
		eos      bool
		interval time.Duration
	}{{false, kafka.DefaultCommitInterval}, {true, 100 * time.Millisecond}, {true, time.Second}}
	var topics []string
	for i := range modes {
		topics = append(topics, fmt.Sprintf("eos-in-%d-%d:%d", i, suffix, *parts), fmt.Sprintf("eos-out-%d-%d:%d", i, suffix, *parts))
	}
	br, err := startBroker(*brokers, 0, topics...)
	if err != nil {
		return err
	}
	defer br.stop()
	res := EOSResult{Scenario: "eos", MessageBytes: *size, Partitions: *parts, Records: *records}
	for i, m := range modes {
		in, outTopic := fmt.Sprintf("eos-in-%d-%d", i, suffix), fmt.Sprintf("eos-out-%d-%d", i, suffix)
		index, err := prefillSeq(br.addr, in, *size, *records)
		if err != nil {
			return err
		}
		r, err := eosRun(br.addr, in, outTopic, fmt.Sprintf("eos-g-%d-%d", i, suffix), m.eos, m.interval, *parts, index, *dur)
		if err != nil {
			return fmt.Errorf("eos run %d: %w", i, err)
		}
		progressLine("%s at %v: %.0f msgs/s, p50 %.0f ms, p99 %.0f ms, lost %d, duplicates %d", r.Mode, m.interval, r.MsgsPerS, r.P50LatencyMs, r.P99LatencyMs, r.Lost, r.Duplicates)
		res.Runs = append(res.Runs, r)
	}
	p, err := writeJSON(*out, "eos", res)
	if err != nil {
		return err
	}
	fmt.Println("wrote", p)
	return plotEOS(res, filepath.Join(*out, "eos.svg"))
}

// prefillSeq writes n records of size bytes to topic, each starting with its sequence number
// (8 bytes, big endian), and returns each record's sequence number by partition and offset.
func prefillSeq(addr, topic string, size, n int) (map[[2]int64]uint64, error) {
	progressLine("prefilling %s with %d × %d B", topic, n, size)
	p, err := ckafka.NewProducer(&ckafka.ConfigMap{"bootstrap.servers": addr, "linger.ms": 5, "log_level": 3, "enable.idempotence": true,
		"queue.buffering.max.kbytes": 256 << 10, "message.max.bytes": max(size+(64<<10), 1000000)})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	reports := make(chan ckafka.Event, 4096)
	index := make(map[[2]int64]uint64, n)
	errc := make(chan error, 1)
	go func() {
		var first error
		for range n {
			m := (<-reports).(*ckafka.Message)
			if m.TopicPartition.Error != nil && first == nil {
				first = m.TopicPartition.Error
			}
			index[[2]int64{int64(m.TopicPartition.Partition), int64(m.TopicPartition.Offset)}] = binary.BigEndian.Uint64(m.Value)
		}
		errc <- first
	}()
	for i := range n {
		v := make([]byte, max(size, 8))
		binary.BigEndian.PutUint64(v, uint64(i))
		for {
			err := p.Produce(&ckafka.Message{TopicPartition: ckafka.TopicPartition{Topic: &topic, Partition: ckafka.PartitionAny}, Value: v}, reports)
			if err == nil {
				break
			}
			if ke, ok := err.(ckafka.Error); !ok || ke.Code() != ckafka.ErrQueueFull {
				return nil, err
			}
			time.Sleep(time.Millisecond) // the report goroutine drains the queue
		}
	}
	return index, <-errc
}

// eosRun copies topic in to out with one pipeline (exactly-once or not) while a read_committed
// reader of out measures; it stops once the reader saw every input or after dur.
func eosRun(addr, in, out, group string, eos bool, interval time.Duration, parts int, index map[[2]int64]uint64, dur time.Duration) (EOSRun, error) {
	r := EOSRun{Mode: "at-least-once", CommitIntervalMs: interval.Milliseconds()}
	cfg := kafka.Config{Brokers: addr, GroupID: group, Topics: []string{in}, CommitInterval: interval, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Overrides: map[string]any{"fetch.wait.max.ms": 10, "log_level": 3}}
	if eos {
		r.Mode, cfg.ExactlyOnce, cfg.TransactionalID = "exactly-once", true, group
	}
	src, err := kafka.NewSource(cfg)
	if err != nil {
		return r, err
	}
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: out, Overrides: map[string]any{"linger.ms": 5, "log_level": 3}})
	if err != nil {
		_ = src.Close(context.Background())
		return r, err
	}
	defer prod.Close(context.Background())
	b := pipeline.New(src)
	copied := pipeline.Then(b.Source(), stage.Map("copy", func(_ context.Context, ev *stage.Event) (kafka.Record, error) {
		ts := strconv.AppendInt(nil, ev.Timestamp.UnixNano(), 10)
		return kafka.Record{Value: slices.Clone(ev.Value), Headers: []stage.Header{{Key: "in-ts", Value: ts}}}, nil
	}, stage.WithConcurrency(2)))
	pipeline.To(copied, prod.Sink("produce"))
	p, err := b.Build()
	if err != nil {
		_ = src.Close(context.Background())
		return r, err
	}
	rd, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": addr, "group.id": group + "-reader", "auto.offset.reset": "earliest",
		"enable.auto.commit": false, "isolation.level": "read_committed", "log_level": 3, "fetch.wait.max.ms": 10})
	if err != nil {
		return r, err
	}
	defer rd.Close()
	if err := rd.Subscribe(out, nil); err != nil {
		return r, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Run(ctx) }()
	seen := map[uint64]int{}
	var lat []float64
	last := start
	for time.Since(start) < dur && len(seen) < len(index) {
		m, ok := rd.Poll(50).(*ckafka.Message)
		if !ok || m.TopicPartition.Error != nil || len(m.Value) < 8 {
			continue
		}
		now := time.Now()
		seen[binary.BigEndian.Uint64(m.Value)]++
		for _, h := range m.Headers {
			if h.Key == "in-ts" {
				ns, _ := strconv.ParseInt(string(h.Value), 10, 64)
				lat = append(lat, float64(now.UnixNano()-ns)/1e6)
			}
		}
		last = now
	}
	elapsed := last.Sub(start)
	cancel()
	if err := <-done; err != nil {
		return r, err
	}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); { // what the final commit made visible
		if m, ok := rd.Poll(50).(*ckafka.Message); ok && m.TopicPartition.Error == nil && len(m.Value) >= 8 {
			seen[binary.BigEndian.Uint64(m.Value)]++
		}
	}
	committed, _, err := offsets(addr, group, in, parts)
	if err != nil {
		return r, err
	}
	for k, seq := range index {
		if k[1] < committed[k[0]] {
			r.Committed++
			if seen[seq] == 0 {
				r.Lost++
			}
		}
	}
	for _, n := range seen {
		r.Seen += int64(n)
		r.Duplicates += int64(n - 1)
	}
	slices.Sort(lat)
	r.RunSeconds = elapsed.Seconds()
	r.MsgsPerS = float64(len(lat)) / max(elapsed.Seconds(), 1e-9)
	r.P50LatencyMs, r.P99LatencyMs = quantile(lat, 0.5), quantile(lat, 0.99)
	return r, nil
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

// plotEOS draws eos.svg: throughput, and p50/p99 latency, per mode.
func plotEOS(r EOSResult, path string) error {
	var names []string
	var tput, p50, p99 plotter.Values
	for _, run := range r.Runs {
		names = append(names, fmt.Sprintf("%s %d ms", run.Mode, run.CommitIntervalMs))
		tput = append(tput, run.MsgsPerS)
		p50 = append(p50, run.P50LatencyMs)
		p99 = append(p99, run.P99LatencyMs)
	}
	w := vg.Points(20)
	tp := plot.New()
	tp.Title.Text = fmt.Sprintf("eos: copy of %d × %d B records, read_committed reader (msgs/s)", r.Records, r.MessageBytes)
	tp.Y.Label.Text = "msgs/s"
	bt, err := plotter.NewBarChart(tput, w)
	if err != nil {
		return err
	}
	bt.Color = palette[1]
	tp.Add(bt)
	tp.NominalX(names...)
	lp := plot.New()
	lp.Title.Text = "latency: input timestamp to the reader (ms)"
	lp.Y.Label.Text = "ms"
	for i, v := range []plotter.Values{p50, p99} {
		b, err := plotter.NewBarChart(v, w)
		if err != nil {
			return err
		}
		b.Color = palette[i*2]
		b.Offset = w * vg.Length(2*i-1) / 2
		lp.Add(b)
		lp.Legend.Add([]string{"p50", "p99"}[i], b)
	}
	lp.Legend.Top = true
	lp.NominalX(names...)
	return saveStacked(path, 8*vg.Inch, 4*vg.Inch, tp, lp)
}
