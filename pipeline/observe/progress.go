package observe

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sluicehq/sluice/pipeline"
)

// progress writes the progress line; owned by Run's goroutine.
type progress struct {
	w     io.Writer // nil: no progress line
	every time.Duration
	tty   bool // rewrite one line in place
	wrote bool // a terminal line is open (end closes it)
	prev  pipeline.Snapshot
	at    time.Time
}

func newProgress(w io.Writer, every time.Duration, s pipeline.Snapshot, at time.Time) *progress {
	if every <= 0 {
		every = 5 * time.Second
	}
	return &progress{w: w, every: every, tty: isTerminal(w), prev: s, at: at}
}

// isTerminal reports whether w is a character device (a terminal), without a dependency:
// files, pipes and buffers are not.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// tick writes the line when its interval has elapsed since the last one.
func (p *progress) tick(now time.Time, cur pipeline.Snapshot, v View) {
	el := now.Sub(p.at)
	if p.w == nil || el < p.every {
		return
	}
	line := progressLine(now, p.prev, cur, el, v)
	if p.tty {
		_, _ = io.WriteString(p.w, "\r"+line+"\x1b[K")
		p.wrote = true
	} else {
		_, _ = io.WriteString(p.w, line+"\n")
	}
	p.prev, p.at = cur, now
}

// end ends an open terminal line.
func (p *progress) end() {
	if p.wrote {
		_, _ = io.WriteString(p.w, "\n")
	}
}

// progressLine is one line of progress over the el before now: rates, lag, in-flight bytes
// of the budget, RSS, the bottleneck and its busy ratio, and stalled calls if any.
func progressLine(now time.Time, prev, cur pipeline.Snapshot, el time.Duration, v View) string {
	secs := el.Seconds()
	bn, busy := pipeline.Bottleneck(prev, cur, el)
	if bn == "" {
		bn = "source"
	}
	s := fmt.Sprintf("%s %s: in %.0f/s, out %.0f/s, lag %d, in flight %s of %s, RSS %s, bottleneck %s (busy %.2f)",
		now.Format("15:04:05"), cur.Name, float64(cur.Emitted-prev.Emitted)/secs, float64(cur.Completed-prev.Completed)/secs,
		v.Source.Lag, formatBytes(cur.InFlightBytes), formatBytes(cur.BudgetBytes), formatBytes(v.RSSBytes), bn, busy)
	if n := len(v.Stalled); n > 0 {
		s += fmt.Sprintf(", %d stalled calls", n)
	}
	return s
}
