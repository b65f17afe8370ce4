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
// Its methods take the source's ordering and limit: the gate decides, the source only counts.
//
// Guarded by Source.mu.
type gate struct {
	inflight int            // events emitted and not completed, every assignment and sequence
	keys     map[string]int // in-flight count per key (OrderKey)
}

func newGate() *gate { return &gate{keys: map[string]int{}} }

// orderKey returns what an event whose message key is key counts in a gate under o: the key
// under OrderKey, nil otherwise, and nil for an empty key (events with no key are unordered).
// The tracker keeps it from receipt, so completion releases exactly what admit counted,
// whatever a stage did to the event.
func orderKey(o Ordering, key []byte) []byte {
	if o == OrderKey && len(key) > 0 {
		return key
	}
	return nil
}

// admit reports whether an event whose message key is key may go now, under ordering o with
// at most limit events in flight (Config.MaxInFlightPerPartition), and if so counts it in
// flight: OrderPartition admits one event at a time, OrderKey one per key (any number without
// a key), OrderNone any; none beyond limit.
func (g *gate) admit(key []byte, o Ordering, limit int) bool {
	k := orderKey(o, key)
	switch {
	case g.inflight >= limit,
		o == OrderPartition && g.inflight > 0,
		k != nil && g.keys[string(k)] > 0:
		return false
	}
	g.inflight++
	if k != nil {
		// The table's key aliases the message's key bytes instead of copying them: those are
		// counted in flight already (a copy of a long key would count twice, beyond the memory
		// formula), stay alive in the tracker until the event completes (then release deletes
		// the entry: under OrderKey a key is in flight at most once), and are never written
		// (a stage may replace ev.Key, never write into the source's bytes).
		g.keys[unsafe.String(unsafe.SliceData(k), len(k))]++
	}
	return true
}

// release ends one in-flight event that admit counted with key under o (the tracker's copy of
// orderKey, or the message's key). An idle key's entry is deleted: the table holds only keys in
// flight, and never a key whose bytes the tracker let go.
func (g *gate) release(key []byte, o Ordering) {
	g.inflight--
	k := orderKey(o, key)
	if k == nil {
		return
	}
	if n := g.keys[string(k)]; n > 1 {
		g.keys[string(k)] = n - 1
	} else {
		delete(g.keys, string(k))
	}
}

// untake undoes admit for an event that was not emitted after all (the pipeline did not take
// it): the same bookkeeping as release.
func (g *gate) untake(key []byte, o Ordering) { g.release(key, o) }

// gateKey returns what m counts in its partition's gate (orderKey).
func (s *Source) gateKey(m *ckafka.Message) []byte { return orderKey(s.cfg.Ordering, m.Key) }

// admit reports whether m's partition's gate admits m now (gate.admit), and if so counts it in
// flight for ps too. Caller holds s.mu.
func (s *Source) admit(ps *partState, m *ckafka.Message) bool {
	if s.txn != nil && !s.txn.mayEmit(ps, int64(m.TopicPartition.Offset)) {
		return false // exactly once: no transaction open, or above the barrier's mark (txn.go)
	}
	if !ps.g.admit(m.Key, s.cfg.Ordering, s.cfg.MaxInFlightPerPartition) {
		return false
	}
	ps.inflight++
	if s.txn != nil {
		s.txn.admitted(ps, int64(m.TopicPartition.Offset))
	}
	return true
}

// untake undoes admit for a message whose event was not emitted. Caller holds s.mu.
func (s *Source) untake(ps *partState, m *ckafka.Message) {
	ps.inflight--
	ps.g.untake(m.Key, s.cfg.Ordering)
}

// gateFor returns the partition's gate, creating it if none has events in flight. Caller
// holds s.mu.
func (s *Source) gateFor(k tpKey) *gate {
	g := s.gates[k]
	if g == nil {
		g = newGate()
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
