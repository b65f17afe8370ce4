package kafka

import (
	"context"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sluicehq/sluice/internal/handover"
	"github.com/sluicehq/sluice/stage"
)

// The polling goroutine hands messages over in bursts: it collects the messages Poll returns
// back to back (up to handover.MaxBurst) and flushes them together, which costs one lock, one
// budget acquisition and one slot of the first edge per burst instead of per message. A burst is
// flushed when Poll has nothing ready, when it is full, before held messages are retried, and
// when a rebalance starts: a burst never waits on a blocking Poll, and a revoke finds its
// partitions' messages emitted or held, never in a burst. Messages are held only by a flush, or
// directly when their partition already holds some: a partition that holds messages has none
// in the burst, so its next messages are held after them, in order.

// emitWait is how long the polling goroutine waits for the first stage to take a message
// when the budget has room, before holding it and pausing the partition. Short enough that
// Poll runs often (rebalances, max.poll.interval.ms); long enough that a stage which is merely
// busy does not cause a pause, a discarded prefetch and a refetch on every fetch burst. A
// producer sink to a broker that cannot keep up frees room one produce response at a time
// (23 records of 40 KiB every 46 ms at 500/s, less regularly on a loaded CPU): at 50 ms the
// seed scenario with a Kafka downstream paused 270 times in 40 s and fetched its input 1.7
// times (8 % less throughput on one shared CPU); at 200 ms, 9 times and 1.0 times.
const emitWait = 200 * time.Millisecond

type emitResult int

const (
	emitted emitResult = iota
	gated              // ordering or per-partition limit: other partitions may go on
	full               // budget or first edge full: nothing can go on
)

// burstMsg is one message of the burst, with its event (built, not yet emitted).
type burstMsg struct {
	ps *partState
	m  *ckafka.Message
	ev *stage.Event
}

// maxBurstBytes bounds the bytes of a burst (counted by msgSize: headers and overhead included):
// bursts of large messages are shorter, so the few bursts the first edge queues stay a small
// working set (the hand-over cost a burst saves is per message, negligible next to copying a
// large one).
const maxBurstBytes = 256 << 10

// collect adds m to the burst. It reports whether the burst is full, or m's partition may have
// reached its span bound (window.go): flush it.
func (s *Source) collect(ps *partState, m *ckafka.Message) bool {
	s.burst = append(s.burst, burstMsg{ps: ps, m: m, ev: s.event(ps, m)})
	s.burstBytes += int(msgSize(m))
	ps.span++
	if ps.low < 0 { // nothing pending: m will be the oldest offset
		ps.low = int64(m.TopicPartition.Offset)
	}
	return len(s.burst) == handover.MaxBurst || s.burstBytes >= maxBurstBytes || s.atBound(ps)
}

// flush records the burst's offsets, admits what its partitions' ordering and limits allow,
// hands the admitted events to the pipeline in one piece, and holds, in order, what was gated
// and what the pipeline did not take (pausing those partitions). A partition whose span
// reached its bound is paused too.
func (s *Source) flush(ctx context.Context) {
	if len(s.burst) == 0 {
		return
	}
	s.st.bursts.Add(1)
	s.st.burstMsgs.Add(uint64(len(s.burst)))
	out, gated := s.burstOut[:0], s.burstGated[:0]
	s.mu.Lock()
	for i := range s.burst {
		r := &s.burst[i]
		r.ps.tr.received(int64(r.m.TopicPartition.Offset), s.gateKey(r.m))
		r.ps.span, r.ps.low = r.ps.tr.pending(), r.ps.tr.low()
		if r.ps.gatedNow || !s.admit(r.ps, r.m) {
			r.ps.gatedNow = true // what follows in its partition waits behind it
			gated = append(gated, i)
			continue
		}
		out = append(out, r.ev)
	}
	s.mu.Unlock()
	n := s.emit.TryEmitBurst(ctx, out, emitWait)
	if n < len(out) {
		// Not taken: undo, then hold in order (per partition, these precede its gated ones).
		// out is a subsequence of the burst: walk both.
		s.mu.Lock()
		for i, j := 0, n; i < len(s.burst) && j < len(out); i++ {
			if r := &s.burst[i]; r.ev == out[j] {
				j++
				s.untake(r.ps, r.m)
			}
		}
		s.mu.Unlock()
		for i, j := 0, n; i < len(s.burst) && j < len(out); i++ {
			if r := &s.burst[i]; r.ev == out[j] {
				j++
				s.dropEvent(r.ev)
				s.hold(r.ps, r.m, true)
			}
		}
	}
	for _, i := range gated {
		r := &s.burst[i]
		r.ps.gatedNow = false
		s.dropEvent(r.ev)
		s.hold(r.ps, r.m, false)
	}
	for i := range s.burst {
		if ps := s.burst[i].ps; !ps.full && s.atBound(ps) {
			s.pauseFull(ps)
		}
	}
	clear(out)
	clear(s.burst)
	s.burst, s.burstOut, s.burstGated, s.burstBytes = s.burst[:0], out[:0], gated[:0], 0
}

// dropBurst gives up the burst (Run is returning): its messages were neither received nor
// counted, and are consumed again by the next owner or after a restart.
func (s *Source) dropBurst() {
	for i := range s.burst {
		s.dropEvent(s.burst[i].ev)
	}
	clear(s.burst)
	s.burst, s.burstBytes = s.burst[:0], 0
}

// tryEmit emits a held message m if its partition's ordering and limit admit it and the
// pipeline has room.
func (s *Source) tryEmit(ctx context.Context, ps *partState, m *ckafka.Message) emitResult {
	s.mu.Lock()
	ok := s.admit(ps, m)
	s.mu.Unlock()
	if !ok {
		return gated
	}
	ev := s.event(ps, m)
	if s.emit.TryEmitWait(ctx, ev, emitWait) {
		return emitted
	}
	// An oversized record waits for another one's error handler: only its partition waits.
	oversized := s.emit.Size(ev) > s.emit.Limit()
	s.mu.Lock()
	s.untake(ps, m)
	s.mu.Unlock()
	s.dropEvent(ev)
	if oversized {
		return gated
	}
	return full
}

// event returns m as a pooled event (m keeps its bytes; the event borrows them).
func (s *Source) event(ps *partState, m *ckafka.Message) *stage.Event {
	ev := s.events.Get().Owner.(*stage.Event)
	ev.Topic, ev.Partition, ev.Offset = ps.tp.topic, ps.tp.partition, int64(m.TopicPartition.Offset)
	ev.Key, ev.Value, ev.Timestamp, ev.SourceTag = m.Key, m.Value, m.Timestamp, ps.epoch
	for _, h := range m.Headers {
		ev.Headers = append(ev.Headers, stage.Header{Key: h.Key, Value: h.Value})
	}
	return ev
}

// dropEvent releases an event that was not emitted; its message keeps the bytes.
func (s *Source) dropEvent(ev *stage.Event) {
	ev.Key, ev.Value = nil, nil
	clear(ev.Headers) // their values are the message's too (poisoned on release otherwise)
	ev.Headers = ev.Headers[:0]
	ev.Release()
}
