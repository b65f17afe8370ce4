package main

import (
	"context"
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// peerConfigs states each run's consumer: what the README's peers table says of it. The peer
// consumers themselves are in bench/peers (their own module, so sluice's dependencies do not
// grow); "sluice" is bench seed's sluice worker with no budget given. modules lists (comma
// separated) the Kafka modules whose versions the run records.
var peerConfigs = []struct{ name, modules, config string }{
	{"sluice", "github.com/confluentinc/confluent-kafka-go/v2",
		"kafka.Source with the default configuration (no Budget) → stage.Sink with concurrency 10; CommitInterval 1 s"},
	{"kgo-pool", "github.com/twmb/franz-go",
		"kgo: PollFetches loop → hand-written pool of 10 workers, wait for the batch, MarkCommitRecords; AutoCommitMarks, BlockRebalanceOnPoll, other options default"},
	{"kgo-partition", "github.com/twmb/franz-go",
		"kgo: franz-go's example goroutine_per_partition_consuming/autocommit_marks: PollRecords(10000), a goroutine per partition fed over a channel of 5 fetches, MarkCommitRecords per fetch; AutoCommitMarks, BlockRebalanceOnPoll"},
	{"watermill", "github.com/ThreeDotsLabs/watermill-kafka/v3,github.com/ThreeDotsLabs/watermill,github.com/IBM/sarama",
		"watermill-kafka Subscriber (sarama) with DefaultSaramaSubscriberConfig + Offsets.Initial=OffsetOldest → message.Router consumer handler (a goroutine per message, ack on return); sarama ChannelBufferSize 256 (default)"},
	{"watermill-buf16", "github.com/ThreeDotsLabs/watermill-kafka/v3,github.com/ThreeDotsLabs/watermill,github.com/IBM/sarama",
		"as watermill, with sarama ChannelBufferSize 16"},
	{"kafka-go", "github.com/segmentio/kafka-go",
		"kafka-go: 10 Readers in the group (ReaderConfig Brokers, GroupID, Topic; rest default), each FetchMessage → downstream → CommitMessages"},
}

// PeersRun is one consumer of peers.json: a seed run plus what it ran.
type PeersRun struct {
	SeedRun
	Library string `json:"library"` // modules and versions of the Kafka client
	Config  string `json:"config"`
}

// PeersResult is peers.json.
type PeersResult struct {
	loadHeader
	RSSCapBytes int64      `json:"rss_cap_bytes"`
	Runs        []PeersRun `json:"runs"`
}

// runPeers runs the seed scenario against sluice's default configuration and each peer, one
// after another on one broker (its own process unless --brokers), each consumer pinned to
// CPU 0 with GOMAXPROCS=1 as bench seed pins sluice. Each run has its own topic and group,
// deleted after the run so the embedded broker does not keep every run's records.
func runPeers(args []string) (err error) {
	var names []string
	for _, p := range peerConfigs {
		names = append(names, p.name)
	}
	o := seedOpts{slots: 10, sleep: 20 * time.Millisecond, rate: 980, size: 40 << 10, partitions: 8}
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.StringVar(&o.brokers, "brokers", "", "bootstrap servers (default: embedded kfakebroker process)")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "length of each consumer run")
	fs.StringVar(&o.out, "out", "bench/results", "output directory")
	fs.Int64Var(&o.rssCap, "rss-cap", 3<<30, "kill a run whose RSS exceeds this")
	runs := fs.String("runs", strings.Join(names, ","), "runs, in order")
	if err := fs.Parse(args); err != nil {
		return err
	}
	configs := map[string]int{}
	for i, p := range peerConfigs {
		configs[p.name] = i
	}
	var peersBin string
	var libs map[string]string
	for _, name := range strings.Split(*runs, ",") {
		if _, ok := configs[name]; !ok {
			return fmt.Errorf("peers: unknown run %q (have %s)", name, strings.Join(names, ","))
		}
		if name != "sluice" && peersBin == "" {
			dir, err := os.MkdirTemp("", "sluice-peers-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			fmt.Fprintln(os.Stderr, "peers: building bench/peers")
			if peersBin, err = buildPeers(dir); err != nil {
				return err
			}
			if libs, err = moduleVersions(peersBin); err != nil {
				return err
			}
		}
	}
	// sluice runs as bench/seedworker, a binary of its own, as each peer runs from its own
	// (bench seed --sluice-binary own).
	sluiceExe, err := seedWorker("own", *runs)
	if err != nil {
		return err
	}
	if sluiceExe != "" {
		defer os.RemoveAll(filepath.Dir(sluiceExe))
	}
	br, err := startBroker(o.brokers, 0)
	if err != nil {
		return err
	}
	defer func() { // a broker that crashed says why (its stderr's tail)
		if br.proc != nil {
			err = errors.Join(err, br.proc.Stop())
		}
	}()
	o.brokers = br.addr
	res := PeersResult{loadHeader: o.header("peers", float64(o.slots)/o.sleep.Seconds()), RSSCapBytes: o.rssCap}
	for _, name := range strings.Split(*runs, ",") {
		pc := peerConfigs[configs[name]]
		run := PeersRun{Config: pc.config, Library: versions(pc.modules, libs)}
		ro := o
		if name == "sluice" {
			run.Library = "github.com/sluicehq/sluice, " + selfVersion(ckafkaModule)
			ro.workerExe = sluiceExe
		} else {
			ro.workerExe = peersBin
		}
		before, err := topicNames(o.brokers)
		if err != nil {
			return err
		}
		run.SeedRun, err = seedRun(ro, name)
		endProgress()
		if err != nil {
			return fmt.Errorf("peers %s: %w", name, err)
		}
		if err := deleteNewTopics(o.brokers, before, "seed-"+name+"-"); err != nil {
			return fmt.Errorf("peers %s: %w", name, err)
		}
		fmt.Fprintf(os.Stderr, "peers %-15s peak RSS %5.1f MiB, %5.1f/s (%3.0f %% of %.0f/s), processed %d, lost %d, duplicates %d, killed=%v\n",
			name, mib(run.PeakRSS), run.Throughput, 100*run.Throughput/res.SinkCapacityPerS, res.SinkCapacityPerS, run.Processed, run.Lost, run.Duplicates, run.KilledByRSSCap)
		res.Runs = append(res.Runs, run)
	}
	p, err := writeJSON(o.out, "peers", res)
	if err != nil {
		return err
	}
	if err := plotPeers(res, filepath.Join(o.out, "peers.svg")); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", p, "and peers.svg")
	return nil
}

const ckafkaModule = "github.com/confluentinc/confluent-kafka-go/v2"

// buildPeers builds the bench/peers module (`go build`, which fetches its modules on first
// use, as its committed go.sum pins them) into dir and returns the binary's path.
func buildPeers(dir string) (string, error) {
	// This file's directory (go run, go test), else relative to the repository root or to
	// bench/ (a binary built with -trimpath).
	candidates := []string{filepath.Join("bench", "peers"), "peers"}
	if _, file, _, ok := runtime.Caller(0); ok {
		candidates = append([]string{filepath.Join(filepath.Dir(file), "peers")}, candidates...)
	}
	src := ""
	for _, c := range candidates {
		if _, err := os.Stat(filepath.Join(c, "go.mod")); err == nil {
			src = c
			break
		}
	}
	if src == "" {
		return "", fmt.Errorf("the bench/peers module is not in any of %v: run from the repository root", candidates)
	}
	bin := filepath.Join(dir, "peers")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %w\n%s", src, err, out)
	}
	return bin, nil
}

// versions is "path version" of each of the comma-separated modules, comma-separated.
func versions(modules string, libs map[string]string) string {
	var vs []string
	for _, m := range strings.Split(modules, ",") {
		vs = append(vs, strings.TrimSpace(m+" "+libs[m]))
	}
	return strings.Join(vs, ", ")
}

// moduleVersions returns the version of each module bin was built with.
func moduleVersions(bin string) (map[string]string, error) {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, d := range bi.Deps {
		m[d.Path] = d.Version
	}
	return m, nil
}

// selfVersion is module path and version as this bench binary was built with it.
func selfVersion(module string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == module {
				return d.Path + " " + d.Version
			}
		}
	}
	return module
}

// topicNames lists the broker's topics.
func topicNames(addr string) (map[string]bool, error) {
	a, err := ckafka.NewAdminClient(&ckafka.ConfigMap{"bootstrap.servers": addr, "log_level": 3})
	if err != nil {
		return nil, err
	}
	defer a.Close()
	md, err := a.GetMetadata(nil, true, 15000)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	names := map[string]bool{}
	for t := range md.Topics {
		names[t] = true
	}
	return names, nil
}

// deleteNewTopics deletes the topics named prefix* that were not in before (the run's input
// topic, named by seedRun), so that the next run starts on a broker that holds no earlier
// records; on a broker given with --brokers it touches no other topic.
func deleteNewTopics(addr string, before map[string]bool, prefix string) error {
	now, err := topicNames(addr)
	if err != nil {
		return err
	}
	var del []string
	for t := range now {
		if !before[t] && strings.HasPrefix(t, prefix) {
			del = append(del, t)
		}
	}
	if len(del) == 0 {
		return nil
	}
	a, err := ckafka.NewAdminClient(&ckafka.ConfigMap{"bootstrap.servers": addr, "log_level": 3})
	if err != nil {
		return err
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := a.DeleteTopics(ctx, del)
	if err != nil {
		return fmt.Errorf("delete topics %v: %w", del, err)
	}
	var errs []error
	for _, r := range res {
		if r.Error.Code() != ckafka.ErrNoError && r.Error.Code() != ckafka.ErrUnknownTopicOrPart {
			errs = append(errs, fmt.Errorf("delete topic %s: %w", r.Topic, r.Error))
		}
	}
	return errors.Join(errs...)
}

// peersPalette has a colour per run (the seed palette has four).
var peersPalette = []color.Color{
	color.RGBA{R: 31, G: 119, B: 180, A: 255},  // sluice
	color.RGBA{R: 255, G: 127, B: 14, A: 255},  // kgo-pool
	color.RGBA{R: 44, G: 160, B: 44, A: 255},   // kgo-partition
	color.RGBA{R: 214, G: 39, B: 40, A: 255},   // watermill
	color.RGBA{R: 148, G: 103, B: 189, A: 255}, // watermill-buf16
	color.RGBA{R: 140, G: 86, B: 75, A: 255},   // kafka-go
}

// plotPeers draws every run's RSS over time and its throughput (5 s window), one line per
// consumer, with the downstream's capacity.
func plotPeers(r PeersResult, path string) error {
	rss := plot.New()
	rss.Title.Text = fmt.Sprintf("peers: consumer RSS (input %.0f msg/s × %d KiB, downstream %.0f/s, one CPU)", r.InputRate, r.MessageBytes>>10, r.SinkCapacityPerS)
	rss.X.Label.Text = "time (s)"
	rss.Y.Label.Text = "RSS (MiB)"
	rss.Legend.Top, rss.Legend.Left = true, true
	tp := plot.New()
	const window = 10 // samples are 0.5 s apart: a 5 s window keeps six lines readable
	tp.Title.Text = "peers: downstream throughput (msgs/s, 5 s window)"
	tp.X.Label.Text = "time (s)"
	tp.Y.Label.Text = "msgs/s"
	tp.Legend.Top, tp.Legend.Left = true, true
	// Room above the lines for the legends (top left).
	var peak int64
	for _, run := range r.Runs {
		peak = max(peak, run.PeakRSS)
	}
	rss.Y.Min, rss.Y.Max = 0, 1.5*mib(peak)
	tp.Y.Min, tp.Y.Max = 0, 1.6*r.SinkCapacityPerS
	add := func(p *plot.Plot, name string, c color.Color, xy plotter.XYs) error {
		l, err := plotter.NewLine(xy)
		if err != nil {
			return err
		}
		l.Color = c
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(name, l)
		return nil
	}
	for i, run := range r.Runs {
		var a, b plotter.XYs
		for j, s := range run.Samples {
			a = append(a, plotter.XY{X: s.T, Y: mib(s.RSS)})
			if j >= window {
				prev := run.Samples[j-window]
				if dt := s.T - prev.T; dt > 0 {
					b = append(b, plotter.XY{X: s.T, Y: float64(s.Processed-prev.Processed) / dt})
				}
			}
		}
		c := peersPalette[i%len(peersPalette)]
		label := fmt.Sprintf("%s: peak %.0f MiB, %.0f/s", run.Name, mib(run.PeakRSS), run.Throughput)
		if run.KilledByRSSCap {
			label += " [killed at RSS cap]"
		}
		if len(a) > 1 {
			if err := add(rss, label, c, a); err != nil {
				return err
			}
		}
		if len(b) > 1 {
			if err := add(tp, run.Name, c, b); err != nil {
				return err
			}
		}
	}
	capLine := plotter.XYs{{X: 0, Y: r.SinkCapacityPerS}, {X: r.Duration, Y: r.SinkCapacityPerS}}
	if err := add(tp, "downstream capacity", color.Gray{Y: 128}, capLine); err != nil {
		return err
	}
	return saveStacked(path, 9*vg.Inch, 4.5*vg.Inch, rss, tp)
}
