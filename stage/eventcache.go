package stage

import "sync"

// Events finished together (a worker's run, see BatchFinisher) go back to the pool as one
// block, and a source's EventCache takes them a block at a time: two pool operations per block
// instead of two per event, on the path every source event takes.
var (
	fullBlocks  sync.Pool // *[]*Event: retired, reset events
	emptyBlocks sync.Pool // *[]*Event: empty, with capacity MaxRun
)

func emptyBlock() *[]*Event {
	if b, ok := emptyBlocks.Get().(*[]*Event); ok {
		return b
	}
	b := make([]*Event, 0, MaxRun)
	return &b
}

// recycle returns retired events (see Event.end) to the pool, in blocks.
func recycle(evs []*Event) {
	b := emptyBlock()
	for _, ev := range evs {
		resetEvent(ev)
		*b = append(*b, ev)
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

// EventCache hands out pooled events a block at a time. It is owned by one goroutine (a
// source's): not safe for concurrent use. Its zero value is ready. Get is GetEvent; the
// events it returns are released as usual (Release, or by the pipeline).
type EventCache struct {
	free *[]*Event // a block taken from the pool, consumed from the end
}

// Get takes an event, as GetEvent.
func (c *EventCache) Get() *Event {
	if c.free == nil || len(*c.free) == 0 {
		if c.free != nil {
			emptyBlocks.Put(c.free)
			c.free = nil
		}
		b, ok := fullBlocks.Get().(*[]*Event)
		if !ok {
			return GetEvent()
		}
		c.free = b
	}
	blk := *c.free
	ev := blk[len(blk)-1]
	blk[len(blk)-1] = nil
	*c.free = blk[:len(blk)-1]
	st := ev.state.Load()
	ev.state.Store(st | liveBit)
	return ev
}
