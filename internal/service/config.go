// Package service is the shared plumbing of sluice's example services: flags with
// environment fallbacks, cgroup-aware sizing and signal handling (pipeline/process), an embedded broker with a load generator, an HTTP server with Prometheus
// metrics, health checks, pprof and a live pipeline page, and a periodic progress line.
package service

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/kafka"
)

// EnvPrefix prefixes the environment variable of every flag: --brokers is SLUICE_BROKERS.
const EnvPrefix = "SLUICE_"

// Config is the parsed command line.
type Config struct {
	Brokers  string        // empty: embedded broker and load generator
	Topic    string        // input topic
	Group    string        // consumer group
	Budget   int64         // whole data budget in bytes (kafka.Config.Budget)
	HTTP     string        // listen address of the HTTP server
	Duration time.Duration // run that long, then drain and exit; 0: until signalled

	Security kafka.Security // SASL and TLS from the security flags (security.go); zero: plaintext

	BudgetSet bool // --budget (or its variable) was given
}

// Embedded reports whether the service runs its own broker.
func (c *Config) Embedded() bool { return c.Brokers == "" }

// EnvName returns the environment variable that backs flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// bytesFlag is a byte count accepting unit suffixes.
type bytesFlag struct {
	v   *int64
	set *bool
}

func (b bytesFlag) String() string {
	if b.v == nil {
		return ""
	}
	return strconv.FormatInt(*b.v, 10)
}

func (b bytesFlag) Set(s string) error {
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b.v, *b.set = n, true
	return nil
}

// ParseBytes parses a byte count: a plain number or one with a suffix K, M, G (powers of
// 1000 with "B", e.g. 64MB) or KiB, MiB, GiB (powers of 1024; a bare K, M or G is also 1024).
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("bad byte count %q", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("bad byte count %q", s)
	}
	mult := map[string]float64{"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "ki": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mi": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gi": 1 << 30, "gb": 1e9}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("bad byte unit %q in %q", unit, s)
	}
	n := int64(f * mult)
	if n <= 0 {
		return 0, fmt.Errorf("byte count %q must be positive", s)
	}
	return n, nil
}

// Defaults are a service's flag defaults.
type Defaults struct {
	Topic  string
	Group  string
	Budget int64 // default whole budget when neither --budget nor a cgroup limit sets it
}

// ParseFlags parses args (without the program name). Each flag falls back to its
// environment variable (EnvName) when absent from args. extra, if not nil, defines the
// service's own flags on the same set (they get the fallback too).
func ParseFlags(name string, args []string, def Defaults, stderr io.Writer, extra func(*flag.FlagSet)) (*Config, error) {
	c := &Config{Budget: def.Budget}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Brokers, "brokers", "", "Kafka bootstrap servers; empty starts an embedded broker and a load generator")
	fs.StringVar(&c.Topic, "topic", def.Topic, "input topic")
	fs.StringVar(&c.Group, "group", def.Group, "consumer group")
	fs.Var(bytesFlag{&c.Budget, &c.BudgetSet}, "budget", "whole memory budget for data (e.g. 64MiB); default 1/4 of the cgroup memory limit, else the service default")
	fs.StringVar(&c.HTTP, "http", "127.0.0.1:8080", "HTTP listen address (metrics, health, pprof, /debug/pipeline)")
	fs.DurationVar(&c.Duration, "duration", 0, "run this long, then drain and exit 0 (default: until SIGTERM/SIGINT)")
	security := securityFromFlags(fs)
	if extra != nil {
		extra(fs)
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", EnvName(f.Name), err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.Topic == "" || c.Group == "" {
		return nil, errors.New("--topic and --group must not be empty")
	}
	var err error
	if c.Security, err = security(); err != nil {
		return nil, err
	}
	if c.Embedded() && !c.Security.IsZero() {
		return nil, errors.New("the security flags and " + PasswordEnv + " need --brokers: the embedded broker is plaintext")
	}
	return c, nil
}
