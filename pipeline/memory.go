package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/stage"
)

// MemSource is an in-memory source for tests and examples: a generator, a slice or a channel.
// Event i gets Offset i. It counts completions.
type MemSource struct {
	next func(ctx context.Context, i int64, ev *stage.Event) (more bool)
	ok   atomic.Uint64
	bad  atomic.Uint64
	// OnComplete, if set before Run, is called from Complete with each finished event.
	OnComplete func(ev *stage.Event, ok bool)
	// borrows is set for Generate, whose fill may point the event's slices at memory the
	// event does not own: Complete drops them before the event is recycled, or the pool
	// would hand that memory to later events as their own buffer (to append into).
	borrows bool
	// waits is set for FromChannel, whose next may block: its events go one at a time.
	waits bool
}

// Generate returns a source of n events (forever when n < 0, until the pipeline's context is
// cancelled); fill sets event i's fields (Key, Value, ...). fill may point Value at shared
// memory: the event does not own it.
func Generate(n int64, fill func(i int64, ev *stage.Event)) *MemSource {
	return &MemSource{next: func(_ context.Context, i int64, ev *stage.Event) bool {
		if n >= 0 && i >= n {
			return false
		}
		fill(i, ev)
		return true
	}, borrows: true}
}

// FromSlice returns a source that emits each value once, in order, copied into the pooled
// event's buffer.
func FromSlice(values [][]byte) *MemSource {
	return &MemSource{next: func(_ context.Context, i int64, ev *stage.Event) bool {
		if i >= int64(len(values)) {
			return false
		}
		ev.Value = append(ev.Value[:0], values[i]...)
		return true
	}}
}

// FromChannel returns a source that emits every value received from ch until ch is closed.
func FromChannel(ch <-chan []byte) *MemSource {
	return &MemSource{next: func(ctx context.Context, _ int64, ev *stage.Event) bool {
		select {
		case v, ok := <-ch:
			if !ok {
				return false
			}
			ev.Value = append(ev.Value[:0], v...)
			return true
		case <-ctx.Done():
			return false
		}
	}, waits: true}
}

// Run implements Source. Generate and FromSlice hand their events over in bursts of memBurst
// when the first stage takes bursts and its input holds at least that many (one budget
// acquisition and one hand-over per burst; the input's capacity still bounds what waits on
// it); otherwise, and for FromChannel, whose next event may be long in coming, one by one.
// When ctx ends, up to memBurst-1 events made but not yet handed over are dropped without
// completing (see emitAll).
func (s *MemSource) Run(ctx context.Context, emit *Emitter) error {
	var cache flow.Cache // takes back the events the pipeline finished together
	var buf [memBurst]*stage.Event
	burst := 1
	if !s.waits && emit.p.first.TakesBursts() && emit.p.first.Cap() >= memBurst {
		burst = memBurst
	}
	for i := int64(0); ctx.Err() == nil; {
		n, more := 0, true
		for n < burst {
			ev := cache.Get().Owner.(*stage.Event)
			if !s.next(ctx, i, ev) {
				ev.Release()
				more = false
				break
			}
			ev.Offset = i
			i++
			buf[n] = ev
			n++
		}
		if err := emitAll(ctx, emit, buf[:n]); err != nil {
			return nil // ctx done: the pipeline is stopping
		}
		if !more {
			return nil
		}
	}
	return nil
}

// memBurst is how many events a MemSource that does not wait for its input hands over at once.
const memBurst = 16

// burstWait is how long emitAll waits for room for a whole burst before it hands the next
// event over alone (Emit, which waits for the budget as long as it takes).
const burstWait = 50 * time.Millisecond

// emitAll hands evs to the pipeline in order, in bursts where it can, blocking as Emit does.
// On error (ctx done) the event Emit returned it for completes with ok=false (Emit's
// contract); the ones after it were never handed over and are dropped without completing,
// as a Kafka source's messages not yet emitted are at a stop.
func emitAll(ctx context.Context, emit *Emitter, evs []*stage.Event) error {
	for len(evs) > 0 {
		k := 0
		if len(evs) > 1 {
			k = emit.tryEmitBurst(ctx, evs, burstWait)
		}
		if k == 0 {
			if err := emit.Emit(ctx, evs[0]); err != nil {
				for _, ev := range evs[1:] {
					ev.Release()
				}
				return err
			}
			k = 1
		}
		evs = evs[k:]
	}
	return nil
}

// Complete implements Source.
func (s *MemSource) Complete(ev *stage.Event, ok bool) {
	if ok {
		s.ok.Add(1)
	} else {
		s.bad.Add(1)
	}
	if s.OnComplete != nil {
		s.OnComplete(ev, ok)
	}
	if s.borrows {
		ev.Key, ev.Value, ev.Headers = nil, nil, nil
	}
}

// CompleteMany completes the events a worker finished together (one count update for all of
// them, as the pipeline's manyCompleter); each event gets what Complete does.
func (s *MemSource) CompleteMany(evs []*stage.Event, ok []bool) {
	var bad uint64
	for i, ev := range evs {
		if !ok[i] {
			bad++
		}
		if s.OnComplete != nil {
			s.OnComplete(ev, ok[i])
		}
		if s.borrows {
			ev.Key, ev.Value, ev.Headers = nil, nil, nil
		}
	}
	s.ok.Add(uint64(len(evs)) - bad)
	if bad > 0 {
		s.bad.Add(bad)
	}
}

// Completed returns how many events completed ok and not ok.
func (s *MemSource) Completed() (ok, notOK uint64) { return s.ok.Load(), s.bad.Load() }

// Collector is an in-memory sink that keeps every value it receives. Values of type
// *stage.Event must not be collected (events are recycled after completion): map them to a
// value first. The zero value is ready to use.
type Collector[T any] struct {
	mu    sync.Mutex // guards items
	items []T
}

// Sink returns the collecting sink stage.
func (c *Collector[T]) Sink(name string, opts ...stage.Option) *stage.Stage[T, stage.None] {
	return stage.Sink(name, func(_ context.Context, v T) error {
		c.mu.Lock()
		c.items = append(c.items, v)
		c.mu.Unlock()
		return nil
	}, opts...)
}

// Items returns a copy of what was collected so far.
func (c *Collector[T]) Items() []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]T(nil), c.items...)
}

// ChanSink returns a sink that sends every value to ch, blocking while ch is full (a slow
// reader slows the pipeline); the value counts as finished once sent.
func ChanSink[T any](name string, ch chan<- T, opts ...stage.Option) *stage.Stage[T, stage.None] {
	return stage.Sink(name, func(ctx context.Context, v T) error {
		select {
		case ch <- v:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, opts...)
}
