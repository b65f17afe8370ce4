package service

import (
	"io"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1048576": 1 << 20, "64MiB": 64 << 20, "64M": 64 << 20, "64MB": 64e6, "1.5GiB": 3 << 29, "512k": 512 << 10} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "0", "12XB"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) succeeded", bad)
		}
	}
}

func TestParseFlagsEnvFallback(t *testing.T) {
	t.Setenv("SLUICE_BROKERS", "env:9092")
	t.Setenv("SLUICE_BUDGET", "32MiB")
	t.Setenv("SLUICE_TOPIC", "from-env")
	c, err := ParseFlags("x", []string{"--topic", "from-flag"}, Defaults{Topic: "t", Group: "g", Budget: 1}, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Brokers != "env:9092" || c.Budget != 32<<20 || !c.BudgetSet || c.Topic != "from-flag" || c.Group != "g" || c.HTTP != "127.0.0.1:8080" {
		t.Fatalf("got %+v", c)
	}
	if _, err := ParseFlags("x", []string{"--budget", "lots"}, Defaults{Topic: "t", Group: "g"}, io.Discard, nil); err == nil {
		t.Fatal("bad --budget accepted")
	}
}
