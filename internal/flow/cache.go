package flow

import (
	"sync"

	"github.com/sluicehq/sluice/pool"
)

// Events finished together (a worker's burst, see ManyFinisher) go back to the pool as one
// block, and a source's Cache takes them a block at a time: two pool operations per block
// instead of two per event, on the path every source event takes.
var (
	fullBlocks  sync.Pool // *[]*Life: retired, reset events
	emptyBlocks sync.Pool // *[]*Life: empty, with capacity MaxBurst
)

func emptyBlock() *[]*Life {
	if b, ok := emptyBlocks.Get().(*[]*Life); ok {
		return b
	}
	b := make([]*Life, 0, MaxBurst)
	return &b
}

// recycle returns retired events (see Life.end) to the pool, in blocks.
func recycle(ls []*Life) {
	b := emptyBlock()
	for _, l := range ls {
		Hooks.Reset(l)
		*b = append(*b, l)
		if len(*b) == cap(*b) {
			fullBlocks.Put(b)
			b = emptyBlock()
		}
	}
	if len(*b) > 0 {
		fullBlocks.Put(b)
	} else {
		emptyBlocks.Put(b)
	}
}

// Cache hands out pooled events a block at a time. It is owned by one goroutine (a source's
// poll loop); the zero value is ready.
type Cache struct {
	free *[]*Life // a block taken from the pool, consumed from the end
}

// Get returns a live event (as its Life), as stage.GetEvent does.
func (c *Cache) Get() *Life {
	if c.free == nil || len(*c.free) == 0 {
		if c.free != nil {
			emptyBlocks.Put(c.free)
			c.free = nil
		}
		b, ok := fullBlocks.Get().(*[]*Life)
		if !ok {
			return Hooks.New()
		}
		c.free = b
	}
	blk := *c.free
	l := blk[len(blk)-1]
	blk[len(blk)-1] = nil
	*c.free = blk[:len(blk)-1]
	l.MarkLive()
	return l
}

// Poisoning reports whether recycled event bytes are overwritten (under the race detector, or
// in debug mode): a stage that kept them without copying then reads garbage in its tests
// instead of corrupting data in production (README, "Who owns what"). A source whose event
// bytes are the event's own (the Kafka source's) poisons them with Poison before letting go.
func Poisoning() bool { return poisonRecycled || pool.Debug() }

// Poison overwrites b (up to its capacity) with 0xDB.
func Poison(b []byte) {
	b = b[:cap(b)]
	for i := range b {
		b[i] = 0xDB
	}
}
