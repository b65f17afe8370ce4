package process

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestEnvFlags(t *testing.T) {
	t.Setenv("SLUICE_BROKERS", "env:9092")
	t.Setenv("SLUICE_TOPIC", "from-env")    // the command line wins
	t.Setenv("SLUICE_OUT_TOPIC", "out-env") // '-' becomes '_'
	t.Setenv("SLUICE_BUDGET", "32MiB")
	t.Setenv("SLUICE_DURATION", "1m")
	t.Setenv("OTHER_GROUP", "not ours") // another prefix is ignored
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "")
	topic := fs.String("topic", "t", "")
	out := fs.String("out-topic", "o", "")
	group := fs.String("group", "g", "")
	dur := fs.Duration("duration", 0, "")
	var budget Bytes
	fs.Var(&budget, "budget", "")
	if err := fs.Parse([]string{"--topic", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if err := EnvFlags(fs, "SLUICE_"); err != nil {
		t.Fatal(err)
	}
	if *brokers != "env:9092" || *topic != "from-flag" || *out != "out-env" || *group != "g" || *dur != time.Minute || budget != 32<<20 {
		t.Fatalf("brokers %q topic %q out %q group %q duration %v budget %d", *brokers, *topic, *out, *group, *dur, budget)
	}
}

func TestEnvFlagsBadValueNamesVariable(t *testing.T) {
	t.Setenv("SLUICE_BUDGET", "lots")
	t.Setenv("SLUICE_DURATION", "soon")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var budget Bytes
	fs.Var(&budget, "budget", "")
	fs.Duration("duration", 0, "")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	err := EnvFlags(fs, "SLUICE_")
	if err == nil || !strings.Contains(err.Error(), "SLUICE_BUDGET") || !strings.Contains(err.Error(), "SLUICE_DURATION") {
		t.Fatalf("err = %v, want both variables named", err)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1048576": 1 << 20, "64MiB": 64 << 20, "64M": 64 << 20, "64MB": 64e6, "1.5GiB": 3 << 29, "512k": 512 << 10, " 2 KiB ": 2 << 10} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "0", "12XB", "1.2.3M"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) succeeded", bad)
		}
	}
}
