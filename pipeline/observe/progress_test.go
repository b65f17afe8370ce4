package observe

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// TestProgressPlainLines: written to a bytes.Buffer (not a terminal), the progress line is
// one plain line per interval: no carriage return, no escape code, sizes in KiB under 1 MiB.
func TestProgressPlainLines(t *testing.T) {
	src := pipeline.Generate(-1, func(i int64, ev *stage.Event) { ev.Value = make([]byte, 100) })
	b := pipeline.New(src, pipeline.WithLogger(quiet()), pipeline.WithBudget(256<<10), pipeline.WithMaxEventBytes(1<<10))
	pipeline.To(b.Source(), stage.Sink("store", func(context.Context, *stage.Event) error { return nil }))
	p, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	m := New(p, WithProgress(&buf, 20*time.Millisecond), WithSampleInterval(10*time.Millisecond))
	stop := runBoth(t, m, p)
	waitFor(t, "12 samples", func() bool { return m.samplesTaken() >= 12 })
	stop() // Run returned: buf is ours to read
	out := buf.String()
	if strings.ContainsAny(out, "\r\x1b") {
		t.Errorf("progress output has a carriage return or escape: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("%d progress lines after 12 samples of 10 ms at 20 ms, want at least 3: %q", len(lines), out)
	}
	for _, l := range lines {
		if !strings.Contains(l, "sluice: in ") || !strings.Contains(l, " of 256.0 KiB,") || strings.Contains(l, " 0.0 MiB") {
			t.Errorf("progress line %q: want the pipeline's rates and sizes in KiB", l)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0.0 KiB", 100: "0.1 KiB", 1536: "1.5 KiB", 1<<20 - 1<<10: "1023.0 KiB",
		1 << 20: "1.0 MiB", 64 << 20: "64.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
