package kafka

import (
	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/stage"
)

// Completion: the pipeline reports each emitted event once it and everything derived from it
// ended. The source finds the event's partition and sequence by the epoch in its Origin,
// releases the ordering slot the tracker kept for the offset at receipt, and marks the offset
// finished (committable once contiguous). Nothing is read from fields a stage may change.

// Complete implements pipeline.Source: it records a finished offset (ok) and frees the
// partition's and key's in-flight slot, both found by the event's Origin. Called from any
// goroutine.
func (s *Source) Complete(ev *stage.Event, ok bool) {
	s.mu.Lock()
	s.complete(s.byEpoch[ev.Origin().Tag], ev, ok)
	s.mu.Unlock()
	s.st.doneSeq.Add(1)
	s.wakeBarrier()
}

// CompleteMany is Complete for several events (the pipeline calls it for a burst a worker finished together), under one
// lock.
func (s *Source) CompleteMany(evs []*stage.Event, ok []bool) {
	s.mu.Lock()
	var ps *partState // bursts mostly come from one partition: look it up once per change
	for i, ev := range evs {
		if tag := ev.Origin().Tag; ps == nil || ps.epoch != tag {
			ps = s.byEpoch[tag]
		}
		s.complete(ps, ev, ok[i])
	}
	s.mu.Unlock()
	s.st.doneSeq.Add(1)
	s.wakeBarrier()
}

// complete is Complete's body, for ev of ps (the epoch of ev's Origin; retired, or nil if
// unknown); the caller then moves doneSeq on. It releases the key slot the tracker kept for
// the offset at receipt, never one read from the event. Caller holds s.mu.
func (s *Source) complete(ps *partState, ev *stage.Event, ok bool) {
	defer letGo(ev) // after the gate released the key, whose table entry aliases ev.Key's bytes
	if ps == nil {
		s.st.late.Add(1) // no epoch holds it (every emitted one should): never commit it
		return
	}
	key, _ := ps.tr.complete(ev.Origin().Offset, ok && !ps.gone)
	ps.inflight--
	ps.g.release(key, s.cfg.Ordering)
	if ps.gone { // a partition let go (or an old sequence): never commit it
		s.st.late.Add(1)
		if ps.inflight == 0 {
			delete(s.byEpoch, ps.epoch)
			s.dropGate(ps.tp)
		}
		return
	}
	if !ok {
		s.st.unfinished.Add(1)
	}
	if ps.revoking && ps.inflight == 0 {
		select {
		case s.revokeWake <- struct{}{}:
		default:
		}
	}
}

// letGo drops the event's bytes: they came from the consumer for this event only, and the
// event pool must not keep them alive. They are the event's, so the ownership check poisons
// them first, as it does every source's (flow.Poisoning). Called once the gate no longer
// refers to the key.
func letGo(ev *stage.Event) {
	if flow.Poisoning() {
		flow.Poison(ev.Key)
		flow.Poison(ev.Value)
		for _, h := range ev.Headers {
			flow.Poison(h.Value)
		}
	}
	ev.Key, ev.Value = nil, nil
}
