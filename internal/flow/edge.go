package flow

import (
	"sync"
	"sync/atomic"

	"github.com/sluicehq/sluice/pool"
)

// ref is the lineage of a message: the source event it derives from (with the generation seen
// when the reference was taken), or the batch group it belongs to. Exactly one of l and grp
// is set. Each message in a channel holds exactly one reference; done ends it.
type ref struct {
	l   *Life
	grp *group
	gen uint32
}

func (r ref) addRefs(n int) {
	if r.l != nil {
		r.l.addRefs(n)
		return
	}
	r.grp.refs.Add(int32(n))
}

func (r ref) done(err error) {
	if r.l != nil {
		r.l.done(r.gen, err)
		return
	}
	r.grp.done(err)
}

// size is the budget bytes behind the reference.
func (r ref) size() int64 {
	if r.l != nil {
		return r.l.size
	}
	return r.grp.size
}

// weight is how many source events the reference stands for: one for an event (a FlatMap
// child counts as one, so a batch may overcount its events), a batch's count for a group.
func (r ref) weight() int64 {
	if r.l != nil {
		return 1
	}
	return r.grp.events
}

// appendLives appends the source events behind the reference.
func (r ref) appendLives(dst []*Life) []*Life {
	if r.l != nil {
		return append(dst, r.l)
	}
	for _, m := range r.grp.members {
		dst = m.appendLives(dst)
	}
	return dst
}

// group is the lineage of a batch: the references of its members, ended together when the
// batch's own outstanding messages reach zero.
type group struct {
	refs    atomic.Int32
	failed  atomic.Bool
	members []ref
	size    int64
	events  int64 // sum of the members' weights
}

var groups = pool.New(func(g *group) {
	clear(g.members)
	g.members = g.members[:0]
	g.size, g.events = 0, 0
	g.failed.Store(false)
})

func (g *group) done(err error) {
	if err != nil {
		g.failed.Store(true)
	}
	n := g.refs.Add(-1)
	switch {
	case n > 0:
		return
	case n < 0:
		pool.ReportMisuse("stage: completion of a batch that already finished (second Ack?)")
		return
	}
	var end error
	if g.failed.Load() {
		end = errFailedLineage
	}
	for _, m := range g.members {
		m.done(end)
	}
	groups.Put(g)
}

// msg is what travels on an Edge: a value and the one reference it holds.
type msg[T any] struct {
	v T
	r ref
}

// parcel is one element of an Edge's channel: a single message, a burst of messages sent in
// one piece (burst != nil: by a source, see EmitBurst), or an open burst its writer may still
// append to until the reader seals it (open != nil: by a stage worker or an ordered stage's
// collector, see openBurst). A burst's slice belongs to the reader once received; it hands
// it back with putBurst. An open burst is released by both.
type parcel[T any] struct {
	m     msg[T]
	burst *[]msg[T]
	open  *openBurst[T]
}

// MaxBurst is the most messages a burst carries.
const MaxBurst = 32

// Edge is the fixed-capacity channel between two stages. Its capacity caps how many messages
// wait between them; a full edge blocks the stage before it (backpressure), and the pipeline's
// byte budget bounds the memory behind the messages either way.
//
// A source may send a burst of up to MaxBurst messages in one piece (EmitBurst) on an edge whose
// stage reads it from one goroutine (TakesBursts): one channel operation, one budget
// acquisition, one batched completion for the burst. A burst takes one slot of the channel but
// counts as its messages: a burst or a single message is sent only while the messages queued,
// plus its own, fit the capacity (or nothing is queued). The edge then holds at most Capacity
// messages, or one burst when Capacity is below MaxBurst, which keeps a polling source's working
// set (and the garbage collector's work) as small as with single messages.
//
// The stage before (a worker, or an ordered stage's collector) sends open bursts on such an
// edge (see openBurst): their messages are counted one by one as they are appended (the edge
// holds at most Capacity messages) and taken one by one as the reader handles them (the reader
// holds one message beyond the capacity, as with single messages).
type Edge[T any] struct {
	ch     chan parcel[T]
	bursts bool // the reader takes bursts (NewInput of a stage that does)
	// Messages queued = wrote - read (edges that take bursts only): two counters, each on its
	// own cache line, so that the writer and the reader each update their own on every message
	// instead of both updating one. Read read before wrote for a count never below the truth.
	wrote atomic.Int64 // messages sent (and appended to open bursts)
	seen  atomic.Int64 // a past value of read, for the senders' room checks (see roomFor)
	_     [48]byte
	read  atomic.Int64 // messages taken
	_     [56]byte

	// A sender that found no room counts itself in waiting and waits on space; a reader that
	// takes a parcel while someone waits signals space (capacity 1: one pending wake-up). The
	// sender re-checks the room after counting itself, so a parcel taken before that is not
	// missed. A sender woken without room waits again; one that gives up passes a wake-up on,
	// so a sender that missed a signal (another took it) is not left waiting with room free.
	waiting atomic.Int32
	space   chan struct{} // capacity 1

	pool  sync.Pool // *[]msg[T] with capacity MaxBurst, empty
	opens sync.Pool // *openBurst[T], empty
}

// NewEdge returns an edge of the given capacity (at least 1) for single messages.
func NewEdge[T any](capacity int) *Edge[T] {
	return &Edge[T]{ch: make(chan parcel[T], max(capacity, 1))}
}

// newBurstEdge returns an edge that also takes bursts (see Edge).
func newBurstEdge[T any](capacity int) *Edge[T] {
	e := NewEdge[T](capacity)
	e.bursts, e.space = true, make(chan struct{}, 1)
	return e
}

// Len reports how many messages (single, or in bursts) wait on the edge.
func (e *Edge[T]) Len() int {
	if e.bursts {
		return int(max(e.queued(), 0))
	}
	return len(e.ch)
}

// queued returns how many messages were sent and not yet taken (edges that take bursts; it may
// dip below zero for a moment, see sent), never less than at the moment of the call.
func (e *Edge[T]) queued() int64 {
	r := e.read.Load()
	return e.wrote.Load() - r
}

// Cap reports the edge's capacity in messages.
func (e *Edge[T]) Cap() int { return cap(e.ch) }

// TakesBursts reports whether a source may send bursts of messages on the edge (EmitBurst): its
// stage reads it from one goroutine (one worker, the dispatcher of ordered workers, a batch
// stage).
func (e *Edge[T]) TakesBursts() bool { return e.bursts }

// sent counts n messages sent on an edge that takes bursts (the reader may have taken them
// already: the count may dip below zero for a moment; Len clamps it).
func (e *Edge[T]) sent(n int) {
	if e.bursts {
		e.wrote.Add(int64(n))
	}
}

// took is called by the reader after each parcel it receives, of n messages: it keeps the
// count and wakes a sender waiting for room.
func (e *Edge[T]) took(n int) {
	if !e.bursts {
		return
	}
	e.read.Add(int64(n))
	e.wakeWaiter()
}

// wakeWaiter wakes one sender waiting for room, if any.
func (e *Edge[T]) wakeWaiter() {
	if e.waiting.Load() > 0 {
		select {
		case e.space <- struct{}{}:
		default:
		}
	}
}

// roomFor reports whether n more messages fit an edge that takes bursts (see Edge). It counts
// from seen, a past value of read on the senders' own cache line (so never fewer messages than
// are queued), and re-reads read only when that count says no: a "no" is always from a fresh
// reading (Edge.waiting relies on it).
func (e *Edge[T]) roomFor(n int) bool {
	fits := func(q int64) bool { return q <= 0 || q+int64(n) <= int64(cap(e.ch)) }
	if fits(e.wrote.Load() - e.seen.Load()) {
		return true
	}
	r := e.read.Load()
	e.seen.Store(r)
	return fits(e.wrote.Load() - r)
}

// getBurst returns an empty burst slice with room for MaxBurst messages.
func (e *Edge[T]) getBurst() *[]msg[T] {
	if r, ok := e.pool.Get().(*[]msg[T]); ok {
		return r
	}
	r := make([]msg[T], 0, MaxBurst)
	return &r
}

// putBurst clears a received burst and keeps it for the next one.
func (e *Edge[T]) putBurst(r *[]msg[T]) {
	clear(*r)
	*r = (*r)[:0]
	e.pool.Put(r)
}

// Close closes the edge: the stage reading it drains what is queued, then finishes. Only the
// writer closes, once.
func (e *Edge[T]) Close() { close(e.ch) }

// Discard ends every message still queued on the edge as abandoned, so their events finish
// (not ok) after a hard stop. Call it only once every writer of the edge has exited. It never
// blocks and returns how many messages it ended.
func (e *Edge[T]) Discard() int {
	for n := 0; ; {
		select {
		case p, ok := <-e.ch:
			if !ok {
				return n
			}
			n += e.each(p, func(m msg[T]) { m.r.done(ErrAborted) })
		default:
			return n
		}
	}
}

// each calls f for every message of a received parcel, in order, recycles a burst, and returns
// how many messages there were. For paths off the hot loop (the worker loop inlines this).
func (e *Edge[T]) each(p parcel[T], f func(msg[T])) int {
	if p.open != nil { // taken one message at a time, as it is handled (see Stage.run)
		ms := p.open.seal()
		for i := range ms {
			e.took(1)
			f(ms[i])
		}
		e.release(p.open)
		return len(ms)
	}
	if p.burst == nil {
		e.took(1)
		f(p.m)
		return 1
	}
	burst := *p.burst
	e.took(len(burst))
	for i := range burst {
		f(burst[i])
	}
	e.putBurst(p.burst)
	return len(burst)
}
