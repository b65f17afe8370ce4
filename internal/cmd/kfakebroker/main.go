// Command kfakebroker runs an embedded kfake Kafka cluster (see package
// kafkatest) as its own process, listening on 127.0.0.1 only, so that
// benchmarks can keep the broker's memory and CPU out of the measured
// process.
//
// Usage:
//
//	kfakebroker [--brokers N] [--topic name:partitions]... [--ports p1,p2]
//	            [--data-dir DIR] [--addr-file PATH] [--trim-interval D]
//	            [--auto-create-topics] [--log-level LEVEL] [--exit-on-stdin-eof]
//	            [--produce-rate topic=N]...
//
// Once every broker listens it writes the bootstrap address
// ("127.0.0.1:p1,127.0.0.1:p2") to --addr-file, if given, atomically through
// a rename, and then prints it as the first line on stdout; a reader that
// has seen the stdout line can rely on the file existing. It runs until
// SIGTERM or SIGINT (or, with --exit-on-stdin-eof, until stdin reaches EOF),
// then closes the cluster, removes the address file and exits 0.
//
// --produce-rate topic=N makes the cluster accept only about N records per second
// of topic: Produce requests carrying its records are answered late, one after the
// other, as by a broker that cannot keep up (nothing is dropped).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/twmb/franz-go/pkg/kfake"
)

// topicsFlag collects repeated --topic name:partitions flags.
type topicsFlag []kafkatest.Option

func (f *topicsFlag) String() string { return "" }

func (f *topicsFlag) Set(s string) error {
	name, ps, ok := strings.Cut(s, ":")
	n := 1
	if ok {
		var err error
		if n, err = strconv.Atoi(ps); err != nil || n < 1 {
			return fmt.Errorf("bad partition count in %q", s)
		}
	}
	if name == "" {
		return fmt.Errorf("empty topic name in %q", s)
	}
	*f = append(*f, kafkatest.Topic(name, n))
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kfakebroker:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kfakebroker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		topics       topicsFlag
		brokers      = fs.Int("brokers", 1, "number of broker nodes")
		ports        = fs.String("ports", "", "comma separated fixed ports, one per broker (default random)")
		dataDir      = fs.String("data-dir", "", "persist state in this directory (default in memory)")
		addrFile     = fs.String("addr-file", "", "write the bootstrap address to this file once listening")
		trimInterval = fs.Duration("trim-interval", 0, "trim every topic to its high watermark this often (0 = off)")
		autoCreate   = fs.Bool("auto-create-topics", false, "let Metadata requests create topics, like auto.create.topics.enable")
		logLevel     = fs.String("log-level", "none", "kfake log level to stderr: none, error, warn, info, debug")
		stdinEOF     = fs.Bool("exit-on-stdin-eof", false, "exit when stdin reaches EOF (the parent died)")
	)
	rates := rateFlag{}
	fs.Var(rates, "produce-rate", "accept about `topic=N` records per second of topic: later Produce responses (repeatable)")
	fs.Var(&topics, "topic", "create topic `name:partitions` at start (repeatable; partitions default 1)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	opts := append([]kafkatest.Option{}, topics...)
	if *ports != "" {
		var ps []int
		for _, s := range strings.Split(*ports, ",") {
			p, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("bad --ports %q", *ports)
			}
			ps = append(ps, p)
		}
		opts = append(opts, kafkatest.Ports(ps...))
		if !isSet(fs, "brokers") {
			*brokers = len(ps)
		}
	}
	opts = append(opts, kafkatest.Brokers(*brokers))
	if *dataDir != "" {
		opts = append(opts, kafkatest.DataDir(*dataDir))
	}
	if *autoCreate {
		opts = append(opts, kafkatest.KfakeOption(kfake.AllowAutoTopicCreation()))
	}
	level, err := parseLevel(*logLevel)
	if err != nil {
		return err
	}
	if level != kfake.LogLevelNone {
		opts = append(opts, kafkatest.KfakeOption(kfake.WithLogger(kfake.BasicLogger(stderr, level))))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *stdinEOF {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		go func() {
			_, _ = io.Copy(io.Discard, stdin)
			cancel()
		}()
	}

	c, err := kafkatest.Start(opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	if len(rates) > 0 {
		(&produceLimiter{rates: rates}).install(c.Kfake())
	}
	if *addrFile != "" {
		if err := writeAtomic(*addrFile, c.Addr()+"\n"); err != nil {
			return err
		}
		defer os.Remove(*addrFile)
	}
	if _, err := fmt.Fprintln(stdout, c.Addr()); err != nil {
		return err
	}

	if *trimInterval > 0 {
		go trimLoop(ctx, c, *trimInterval, stderr)
	}
	<-ctx.Done()
	return nil
}

// trimLoop trims every topic each interval until ctx is done.
func trimLoop(ctx context.Context, c *kafkatest.Cluster, every time.Duration, stderr io.Writer) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tctx, cancel := context.WithTimeout(ctx, every+5*time.Second)
		err := c.TrimAll(tctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			fmt.Fprintln(stderr, "kfakebroker: trim:", err)
		}
	}
}

// writeAtomic writes data to path through a temporary file in the same
// directory and a rename, so readers never see a partial address.
func writeAtomic(path, data string) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	err = errors.Join(err, f.Chmod(0o644))
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func parseLevel(s string) (kfake.LogLevel, error) {
	switch strings.ToLower(s) {
	case "none", "":
		return kfake.LogLevelNone, nil
	case "error":
		return kfake.LogLevelError, nil
	case "warn":
		return kfake.LogLevelWarn, nil
	case "info":
		return kfake.LogLevelInfo, nil
	case "debug":
		return kfake.LogLevelDebug, nil
	}
	return 0, fmt.Errorf("unknown --log-level %q", s)
}
