package flow

import "sync/atomic"

// openBurst is a burst a stage worker sends on an edge that takes bursts and keeps appending
// its next outputs to until the reader receives it and seals it: one channel operation for
// every output the worker produced while the reader was busy, and none held back. An output
// is visible to the reader as soon as it is appended, so a slow or stuck call never holds the
// outputs made before it (the reader seals whatever is there when it gets to the burst).
//
// Ownership: one writer (the outlet that made it) appends; the reader seals it once. Each
// holds a reference; the last to release it recycles it. Its messages count against the
// edge's capacity from their append (Edge.reserve) until the reader takes them (took).
type openBurst[T any] struct {
	msgs [MaxBurst]msg[T]
	// state is the number of messages appended, with sealed set once the reader sealed it.
	// The writer appends with a CAS from the count it knows, so an append after the seal
	// fails and the message goes into the next burst.
	state atomic.Uint32
	refs  atomic.Int32 // holders: the writer until it stops appending, the reader once received
}

const (
	sealed    = uint32(1) << 31
	endMark   = uint32(1) << 30 // an ordered worker's results: the last of a chunk (see startOrdered)
	countMask = endMark - 1
)

// newOpen returns an open burst of e holding m, referenced by the writer and the reader.
func (e *Edge[T]) newOpen(m msg[T]) *openBurst[T] {
	b := e.emptyOpen(1)
	b.msgs[0] = m
	return b
}

// emptyOpen returns an open burst of e in the given state, with no message written.
func (e *Edge[T]) emptyOpen(state uint32) *openBurst[T] {
	b, ok := e.opens.Get().(*openBurst[T])
	if !ok {
		b = new(openBurst[T])
	}
	b.state.Store(state)
	b.refs.Store(2)
	return b
}

// append adds m as message n (the count the writer knows) unless the reader sealed b first.
// The writer's only.
func (b *openBurst[T]) append(n uint32, m msg[T]) bool {
	b.msgs[n] = m
	if b.state.CompareAndSwap(n, n+1) {
		return true
	}
	b.msgs[n] = msg[T]{} // sealed meanwhile: the reader reads only what it sealed
	return false
}

// end marks b as holding the last results of a chunk, unless the reader sealed it first. n is
// the count the writer knows.
func (b *openBurst[T]) end(n uint32) bool { return b.state.CompareAndSwap(n, n|endMark) }

// seal ends the appending and returns the messages appended. The reader's, once.
func (b *openBurst[T]) seal() []msg[T] {
	ms, _ := b.sealEnd()
	return ms
}

// sealEnd is seal that also reports the end mark.
func (b *openBurst[T]) sealEnd() ([]msg[T], bool) {
	st := b.state.Or(sealed)
	return b.msgs[:st&countMask], st&endMark != 0
}

// release drops one holder's reference; the last recycles b.
func (e *Edge[T]) release(b *openBurst[T]) {
	if b.refs.Add(-1) == 0 {
		clear(b.msgs[:])
		b.state.Store(0)
		e.opens.Put(b)
	}
}

// reserve counts one more message on an edge that takes bursts if it has room for it (see
// Edge: room for one more, or nothing queued); a writer that reserved sends or appends it.
// *seen is the writer's last reading of e.read: the writer re-reads the reader's counter only
// when the count from it says the edge is full (it only ever grows, so the count from an old
// reading is never below the truth).
func (e *Edge[T]) reserve(seen *int64) bool {
	w := e.wrote.Add(1)
	if w-*seen <= int64(cap(e.ch)) {
		return true
	}
	*seen = e.read.Load()
	if q := w - *seen; q <= int64(cap(e.ch)) || q <= 1 {
		return true
	}
	e.wrote.Add(-1)
	e.wakeWaiter() // another writer may have seen the edge full through this reservation
	return false
}
