package stage

import (
	"sync/atomic"

	"github.com/sluicehq/sluice/pool"
)

// ref is the lineage of a message: the source event it derives from (with the generation seen
// when the reference was taken), or the batch group it belongs to. Exactly one of ev and grp
// is set. Each message in a channel holds exactly one reference; done ends it.
type ref struct {
	ev  *Event
	grp *group
	gen uint32
}

func (r ref) addRefs(n int) {
	if r.ev != nil {
		r.ev.addRefs(n)
		return
	}
	r.grp.refs.Add(int32(n))
}

func (r ref) done(err error) {
	if r.ev != nil {
		r.ev.done(r.gen, err)
		return
	}
	r.grp.done(err)
}

// size is the budget bytes behind the reference.
func (r ref) size() int64 {
	if r.ev != nil {
		return r.ev.size
	}
	return r.grp.size
}

// appendEvents appends the source events behind the reference.
func (r ref) appendEvents(dst []*Event) []*Event {
	if r.ev != nil {
		return append(dst, r.ev)
	}
	for _, m := range r.grp.members {
		dst = m.appendEvents(dst)
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
}

var groups = pool.New(func(g *group) {
	clear(g.members)
	g.members = g.members[:0]
	g.size = 0
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

// Edge is the fixed-capacity channel between two stages. Its capacity caps how many messages
// wait between them; a full edge blocks the stage before it (backpressure).
type Edge[T any] struct {
	ch chan msg[T]
}

// NewEdge returns an edge of the given capacity (at least 1).
func NewEdge[T any](capacity int) *Edge[T] {
	return &Edge[T]{ch: make(chan msg[T], max(capacity, 1))}
}

// Len reports how many messages wait on the edge.
func (e *Edge[T]) Len() int { return len(e.ch) }

// Cap reports the edge's capacity.
func (e *Edge[T]) Cap() int { return cap(e.ch) }

// Close closes the edge: the stage reading it drains what is queued, then finishes. Only the
// writer closes, once.
func (e *Edge[T]) Close() { close(e.ch) }

// Discard ends every message still queued on the edge as abandoned, so their events finish
// (not ok) after a hard stop. Call it only once every writer of the edge has exited. It never
// blocks and returns how many it ended.
func (e *Edge[T]) Discard() int {
	for n := 0; ; n++ {
		select {
		case m, ok := <-e.ch:
			if !ok {
				return n
			}
			m.r.done(errAborted)
		default:
			return n
		}
	}
}
