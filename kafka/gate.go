package kafka

import (
	"unsafe"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// gate is one partition's ordering state on this member: its events in flight and, under
// OrderKey, the in-flight count of each key. It belongs to the partition, not to one
// assignment or sequence of it: when the partition is let go with events still in flight
// (revoke timeout, lost assignment, assigned again without a revoke) or its offsets restart
// (restartSeq), those events keep their slots here until they complete, so a later
// assignment of the partition on this member, or its new sequence, waits for them exactly as
// for its own. Source.gates holds it while the partition is assigned or has events in flight.
//
// Guarded by Source.mu.
type gate struct {
	inflight int            // events emitted and not completed, every assignment and sequence
	keys     map[string]int // in-flight count per key (OrderKey)
}

// release ends one in-flight event that counted key (nil: none).
func (g *gate) release(key []byte) {
	g.inflight--
	if key == nil {
		return
	}
	if n := g.keys[string(key)]; n > 1 {
		g.keys[string(key)] = n - 1
	} else {
		delete(g.keys, string(key))
	}
}

// gateKey returns the key m counts in its partition's gate: its key under OrderKey, else nil.
// The tracker keeps it from receipt, so completion releases exactly what admit counted,
// whatever a stage did to the event.
func (s *Source) gateKey(m *ckafka.Message) []byte {
	if s.cfg.Ordering == OrderKey && len(m.Key) > 0 {
		return m.Key
	}
	return nil
}

// admit reports whether m's partition's ordering and in-flight limit let m go now, and if so
// counts it in flight. Caller holds s.mu.
func (s *Source) admit(ps *partState, m *ckafka.Message) bool {
	g, key := ps.g, s.gateKey(m)
	switch {
	case g.inflight >= s.cfg.MaxInFlightPerPartition,
		s.cfg.Ordering == OrderPartition && g.inflight > 0,
		key != nil && g.keys[string(key)] > 0:
		return false
	}
	g.inflight++
	ps.inflight++
	if key != nil {
		// The table's key aliases the message's key bytes instead of copying them: those are
		// counted in flight already (a copy of a long key would count twice, beyond the memory
		// formula), stay alive in the tracker until the event completes (then release deletes
		// the entry: under OrderKey a key is in flight at most once), and are never written
		// (a stage may replace ev.Key, never write into the source's bytes).
		g.keys[unsafe.String(unsafe.SliceData(key), len(key))]++
	}
	return true
}

// untake undoes admit for a message whose event was not emitted. Caller holds s.mu.
func (s *Source) untake(ps *partState, m *ckafka.Message) {
	ps.inflight--
	ps.g.release(s.gateKey(m))
}

// gateFor returns the partition's gate, creating it if none has events in flight. Caller
// holds s.mu.
func (s *Source) gateFor(k tpKey) *gate {
	g := s.gates[k]
	if g == nil {
		g = &gate{keys: map[string]int{}}
		s.gates[k] = g
	}
	return g
}

// retire forgets ps, an assignment or sequence of its partition that is over: it stays
// reachable by epoch only while its events are in flight (their completions release their
// gate slots, counted late, never committed), and the gate goes once nothing holds it.
// Caller holds s.mu; ps is no longer in s.parts under its epoch.
func (s *Source) retire(ps *partState) {
	ps.gone = true
	if ps.inflight == 0 {
		delete(s.byEpoch, ps.epoch)
	}
	s.dropGate(ps.tp)
}

// dropGate removes the partition's gate if it is idle and the partition is not assigned.
// Caller holds s.mu.
func (s *Source) dropGate(k tpKey) {
	if g := s.gates[k]; g != nil && g.inflight == 0 && s.parts[k] == nil {
		delete(s.gates, k)
	}
}
