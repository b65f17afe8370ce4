package observe

import (
	"bytes"
	"runtime"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/internal/clock"
	"github.com/sluicehq/sluice/internal/flow"
)

// callKey identifies one call (one attempt): its stage, goroutine and start time.
type callKey struct {
	stage string
	gid   int64
	start int64
}

// calls returns the stage calls running now (none when stall tracking is off).
func (m *Monitor) calls() []flow.Call {
	if m.running == nil {
		return nil
	}
	return m.running(nil)
}

// checkStalls logs every call running longer than the stall threshold that it has not logged
// yet: once per call. One goroutine dump serves all the calls found in one check.
func (m *Monitor) checkStalls() {
	if m.running == nil {
		return
	}
	now := clock.Nanotime()
	var fresh []flow.Call
	m.mu.Lock()
	live := make(map[callKey]bool, len(m.stalled))
	for _, c := range m.calls() {
		if time.Duration(now-c.Start) <= m.cfg.stall {
			continue
		}
		k := callKey{c.Stage, c.Goroutine, c.Start}
		live[k] = true
		if !m.stalled[k] {
			fresh = append(fresh, c)
		}
	}
	m.stalled = live // forget the calls that ended
	m.mu.Unlock()
	if len(fresh) == 0 {
		return
	}
	dump := goroutineDump()
	for _, c := range fresh {
		m.cfg.log.Warn("stage call stalled", "stage", c.Stage, "topic", c.Origin.Topic, "partition", c.Origin.Partition,
			"offset", c.Origin.Offset, "events", c.Events, "running", time.Duration(now-c.Start).Round(time.Millisecond),
			"threshold", m.cfg.stall, "goroutine", c.Goroutine, "stack", string(goroutineStack(dump, c.Goroutine)))
	}
}

// goroutineDump returns the stacks of all goroutines (runtime.Stack with all=true, which
// stops the world briefly), growing its buffer until the dump fits (at most 64 MiB).
func goroutineDump() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= 64<<20 {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutineStack returns goroutine id's block of a dump, or a note when it is not there (the
// call ended meanwhile, or the dump was truncated).
func goroutineStack(dump []byte, id int64) []byte {
	head := []byte("goroutine " + strconv.FormatInt(id, 10) + " [")
	for len(dump) > 0 {
		block := dump
		if i := bytes.Index(dump, []byte("\n\n")); i >= 0 {
			block, dump = dump[:i], dump[i+2:]
		} else {
			dump = nil
		}
		if bytes.HasPrefix(block, head) {
			return block
		}
	}
	return []byte("(goroutine " + strconv.FormatInt(id, 10) + " not in the dump: the call ended)")
}
