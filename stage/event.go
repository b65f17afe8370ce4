package stage

import (
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/pool"
)

// Header is a key/value pair carried with an Event (a Kafka record header).
type Header struct {
	Key   string
	Value []byte
}

// Event is the unit a source emits: a Kafka-record-like value with a completion count. Events
// are pooled: take one with GetEvent, hand it to the pipeline, and the pipeline returns it to
// the pool with Release once it and everything derived from it finished.
//
// Ownership: from emission until completion the event belongs to the pipeline. A stage may
// read it while processing the message that carries it, and may keep references to its
// fields only until that stage returns; the event (and Key, Value, Headers) must not be used
// after Release, because it is recycled for another record.
type Event struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time
	// SourceTag is the source's own: the pipeline never reads it. The Kafka source stores the
	// partition's assignment epoch there, so a completion that arrives after the partition
	// was revoked is recognised and never committed.
	SourceTag uint64

	// size is the number of budget bytes the event holds; set by the pipeline at emission.
	size int64
	// state packs the generation (high 32 bits), a live flag (bit 31) and the count of
	// outstanding messages derived from the event (bits 0-30). Every transition is a CAS on
	// this one word, so a completion racing a recycle is always detected, never applied to
	// the next record that reuses the object.
	state atomic.Uint64
	// failed is set when any derived message ended with a fatal error; read when the count
	// reaches zero.
	failed atomic.Bool
	// fin is told when the count reaches zero. Set by the pipeline at emission.
	fin Finisher
}

// Finisher receives an event whose derived work has all ended. ok is false when some of it
// failed fatally or was abandoned by a hard stop: the event must then not be committed. The
// pipeline implements it; sources never do.
type Finisher interface {
	Finish(ev *Event, ok bool)
}

const (
	liveBit  = uint64(1) << 31
	refsMask = liveBit - 1
	genShift = 32
)

var events = pool.New(func(ev *Event) {
	st := ev.state.Load()
	gen := st >> genShift
	clear(ev.Headers) // keep the slice, not the header values of the last record
	*ev = Event{Key: ev.Key[:0], Value: ev.Value[:0], Headers: ev.Headers[:0]}
	ev.state.Store(gen << genShift)
})

// GetEvent takes an event from the pool. Its fields are empty; Key, Value and Headers may
// keep capacity from an earlier use (append into them to reuse it). The caller owns it until
// it is emitted; an event that is never emitted must be returned with Release.
func GetEvent() *Event {
	ev := events.Get()
	st := ev.state.Load()
	ev.state.Store(st | liveBit)
	return ev
}

// Size returns the bytes the event holds against the pipeline's budget (0 before emission).
func (ev *Event) Size() int64 { return ev.size }

// Release returns the event to the pool. The event must not be used after Release. A second
// Release, or a Release while derived messages are in flight, is a misuse: it is counted by
// pool.DoubleReleases (a panic in debug mode) and the event is left alone.
func (ev *Event) Release() {
	for {
		st := ev.state.Load()
		if st&liveBit == 0 {
			pool.ReportMisuse("stage.Event: Release of an event that is not live (second Release?)")
			return
		}
		if st&refsMask != 0 {
			pool.ReportMisuse("stage.Event: Release while derived messages are in flight")
			return
		}
		next := ((st >> genShift) + 1) << genShift
		if ev.state.CompareAndSwap(st, next) {
			events.Put(ev)
			return
		}
	}
}

// Begin prepares an event for emission: it records the budget size, the finisher and one
// outstanding message (the one about to be emitted). Called by the pipeline.
func (ev *Event) Begin(size int64, fin Finisher) {
	ev.size = size
	ev.fin = fin
	ev.failed.Store(false)
	ev.state.Add(1)
}

// gen returns the current generation, for handles that must detect staleness.
func (ev *Event) gen() uint32 { return uint32(ev.state.Load() >> genShift) }

// addRefs records n more outstanding derived messages.
func (ev *Event) addRefs(n int) {
	if n > 0 {
		ev.state.Add(uint64(n))
	}
}

// done ends one outstanding message. gen is the generation the caller saw when it took its
// reference; a mismatch (the event was recycled) or a count already at zero is a misuse and
// changes nothing.
func (ev *Event) done(gen uint32, err error) {
	for {
		st := ev.state.Load()
		if uint32(st>>genShift) != gen || st&liveBit == 0 || st&refsMask == 0 {
			pool.ReportMisuse("stage.Event: completion of an event that already finished (second Ack?)")
			return
		}
		// Mark the failure only once the reference is known to be current: a stale
		// completion must not mark the next record that reuses the object.
		if err != nil {
			ev.failed.Store(true)
		}
		if ev.state.CompareAndSwap(st, st-1) {
			if (st-1)&refsMask == 0 {
				ev.fin.Finish(ev, !ev.failed.Load())
			}
			return
		}
	}
}
