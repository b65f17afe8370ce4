// Package flow is sluice's engine: the fixed-capacity edges between stages, the lifecycle of a
// source event (emission, derived references, completion exactly once), the stage workers and
// the hand-over of bursts from a source. The public packages stage and pipeline are its
// facade; nothing here is for users.
//
// Package flow cannot import stage (stage imports flow), so it knows a source event only by its
// Life, which the public stage.Event embeds, and reaches stage's public types (Failure,
// PanicError) through Hooks, which package stage sets in its init.
package flow

import (
	"sync/atomic"

	"github.com/sluicehq/sluice/pool"
)

// Origin is a source event's identity, fixed at emission (stage.Origin has the same fields).
type Origin struct {
	Topic     string
	Partition int32
	Offset    int64
	Tag       uint64
}

// Life is the lifecycle of one pooled source event: its budget bytes, the count of messages
// derived from it, and who is told when the count reaches zero.
type Life struct {
	// Owner is the *stage.Event this Life belongs to; set once, when the event is allocated.
	Owner any
	// origin is the event's identity, copied from its fields at emission (Begin).
	origin Origin
	// size is the number of budget bytes the event holds; set at emission.
	size int64
	// state packs the generation (high 32 bits), a live flag (bit 31), a failed flag (bit
	// 30: some derived message ended with a fatal error) and the count of outstanding
	// messages derived from the event (bits 0-29). Every transition is a CAS on this one
	// word, so a completion racing a recycle is always detected, never applied to the next
	// record that reuses the object.
	state atomic.Uint64
	// fin is told when the count reaches zero. Set at emission.
	fin Finisher
	// Trace is the pipeline's Tracer's own data for the event (kafka/kotel: the event's
	// trace context, computed on its first traced call). Written only by the first call on
	// the event, which runs before any message derived from it exists (a FlatMap or a Batch
	// hands the event on only after a call): later calls, on any goroutine, only read it.
	// Cleared by Reset.
	Trace any
}

// Finisher receives an event whose derived work has all ended. ok is false when some of it
// failed fatally or was abandoned by a hard stop: the event must then not be committed.
type Finisher interface {
	Finish(l *Life, ok bool)
}

// ManyFinisher is a Finisher that also finishes several events in one call (ok[i] is ls[i]'s
// outcome), as a worker does after a burst of messages: one lock and one budget release for
// the burst. The events are already retired when it is called (recycled right after it
// returns): their fields may be read, nothing else done with them.
type ManyFinisher interface {
	Finisher
	FinishMany(ls []*Life, ok []bool)
}

const (
	liveBit  = uint64(1) << 31
	failBit  = uint64(1) << 30
	refsMask = failBit - 1
	genShift = 32
)

// Origin returns the identity fixed at emission (the zero Origin before it).
func (l *Life) Origin() Origin { return l.origin }

// Size returns the budget bytes the event holds (0 before emission).
func (l *Life) Size() int64 { return l.size }

// MarkLive marks a pooled event handed out again (GetEvent).
func (l *Life) MarkLive() { l.state.Store(l.state.Load() | liveBit) }

// Retire ends the event's generation for Release: it reports false (and a misuse) when the
// event is not live or still has derived messages in flight, in which case it must not be
// pooled.
func (l *Life) Retire() bool {
	for {
		st := l.state.Load()
		if st&liveBit == 0 {
			pool.ReportMisuse("stage.Event: Release of an event that is not live (second Release?)")
			return false
		}
		if st&refsMask != 0 {
			pool.ReportMisuse("stage.Event: Release while derived messages are in flight")
			return false
		}
		if l.state.CompareAndSwap(st, ((st>>genShift)+1)<<genShift) {
			return true
		}
	}
}

// Reset clears what the pipeline set at emission; the generation and flags stay.
func (l *Life) Reset() {
	l.origin.Topic, l.origin.Partition, l.origin.Offset, l.origin.Tag = "", 0, 0, 0
	l.size, l.fin, l.Trace = 0, nil, nil
}

// Begin prepares the event for emission: its identity (the source's topic, partition, offset
// and tag), its budget bytes, its finisher, and the one reference the emission holds.
func (l *Life) Begin(topic string, partition int32, offset int64, tag uint64, size int64, fin Finisher) {
	// Field by field: copying an Origin value (a struct holding a pointer) costs a bulk copy
	// with write barriers on the hot path.
	l.origin.Topic, l.origin.Partition, l.origin.Offset, l.origin.Tag = topic, partition, offset, tag
	l.size, l.fin = size, fin
	l.state.Add(1)
}

// Unbegin undoes Begin for an event that was not emitted after all; the caller owns it again.
func (l *Life) Unbegin() {
	l.state.Add(^uint64(0)) // the one reference Begin added
	l.fin, l.size = nil, 0
}

// Abandon ends the reference Begin took for an event that could not be emitted (the source was
// stopped first). The event finishes, not ok.
func (l *Life) Abandon() { l.done(l.gen(), ErrAborted) }

// Complete ends the reference Begin took, successfully: for an event finished without going
// through the stages (an oversized event the error handler took).
func (l *Life) Complete() { l.done(l.gen(), nil) }

func (l *Life) gen() uint32 { return uint32(l.state.Load() >> genShift) }

func (l *Life) addRefs(n int) {
	if n > 0 {
		l.state.Add(uint64(n))
	}
}

// end ends one reference of generation gen (failed when err != nil) and reports whether it
// was the last and whether the event finished ok. With retire, the last end also ends the
// generation in the same CAS (the caller recycles the event).
func (l *Life) end(gen uint32, err error, retire bool) (last, ok bool) {
	var fail uint64
	if err != nil {
		fail = failBit
	}
	for {
		st := l.state.Load()
		if uint32(st>>genShift) != gen || st&liveBit == 0 || st&refsMask == 0 {
			pool.ReportMisuse("stage.Event: completion of an event that already finished (second Ack?)")
			return false, false
		}
		next := (st - 1) | fail
		last, ok = next&refsMask == 0, next&failBit == 0
		if last && retire {
			next = ((st >> genShift) + 1) << genShift
		}
		if l.state.CompareAndSwap(st, next) {
			return last, ok
		}
	}
}

func (l *Life) done(gen uint32, err error) {
	if last, ok := l.end(gen, err, false); last {
		l.fin.Finish(l, ok)
	}
}
