package chaos

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// What a run draws and how it ends: the fault order a seed picks, the final wait, and the
// diagnostics of a run that did not process everything.

// drainIdle is how long the final wait goes on without a record processed for the first time
// before it gives up: the consumers may be minutes behind on a loaded machine (a 5-minute soak
// ended 92k records behind here and drained them in 83 s), so the wait is bounded by progress,
// not by a fixed time (a fixed 2 minutes could count records that were only late as lost).
const drainIdle = 30 * time.Second

// awaitAll polls count until it reaches target (true), ctx ends or count did not move for idle
// (false), calling tick after each poll. No signal spans the broker: it polls.
func awaitAll(ctx context.Context, count func() int64, target int64, idle time.Duration, tick func()) bool {
	last, moved := count(), time.Now()
	for last < target {
		if ctx.Err() != nil || time.Since(moved) >= idle {
			return false
		}
		time.Sleep(idle / 300)
		tick()
		if n := count(); n != last {
			last, moved = n, time.Now()
		}
	}
	return true
}

// faultNames returns the fault kinds in a fixed (sorted) order: the order Run draws from,
// so that a seed alone picks the faults (a map's order is random on every iteration).
func faultNames[F any](faults map[string]F) []string {
	names := make([]string, 0, len(faults))
	for name := range faults {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// logLost logs, per partition, how many delivered records were never processed and their
// offset range.
func (h *harness) logLost() {
	h.mu.Lock()
	defer h.mu.Unlock()
	type span struct{ n, lo, hi int64 }
	lost := map[int64]*span{}
	for i, w := range h.where {
		if w == 0 || h.seen["c-"+strconv.Itoa(i)] > 0 {
			continue
		}
		p, off := int64((w-1)>>48), int64((w-1)&(1<<48-1))
		sp := lost[p]
		if sp == nil {
			sp = &span{lo: off, hi: off}
			lost[p] = sp
		}
		sp.n++
		sp.lo, sp.hi = min(sp.lo, off), max(sp.hi, off)
	}
	for p, sp := range lost {
		h.cfg.Logger.Warn("chaos: records never processed", "partition", p, "records", sp.n, "first_offset", sp.lo, "last_offset", sp.hi)
	}
}

// logMembers logs each running member's partitions (paused, lag) and counters: where a stalled
// final wait is stuck.
func (h *harness) logMembers() {
	h.mu.Lock()
	runs := slices.Clone(h.runs)
	h.mu.Unlock()
	for _, m := range runs {
		st := m.src.Stats()
		parts := make([]string, 0, len(st.Partitions))
		for _, p := range st.Partitions {
			parts = append(parts, fmt.Sprintf("%d(paused=%v lag=%d)", p.Partition, p.Paused, p.Lag))
		}
		h.cfg.Logger.Warn("chaos: member at the end of the wait", "member", m.id, "partitions", parts, "paused", st.Paused,
			"rebalances", st.Rebalances, "revoke_timeouts", st.RevokeTimeouts, "rewinds", st.Rewinds, "stale", st.Stale, "late", st.LateCompletions)
	}
}

// delivered records where m (a delivered "c-<i>") went, for logLost.
func (h *harness) delivered(m *ckafka.Message) {
	i, err := strconv.Atoi(strings.TrimPrefix(string(m.Value), "c-"))
	if err != nil || i < 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.where) <= i {
		h.where = append(h.where, 0)
	}
	h.where[i] = uint64(m.TopicPartition.Partition)<<48 | uint64(m.TopicPartition.Offset) + 1
}
