package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/internal/handover"
	"github.com/sluicehq/sluice/stage"
)

// Emitter is how a source hands events to the pipeline. It is safe for concurrent use, until
// the source's Run returns: the pipeline then closes its first edge, and an Emit after that
// (from a goroutine the source left running) is a misuse that panics.
type Emitter struct {
	p *Pipeline
}

// Emit hands ev to the pipeline. It blocks while the budget has no room for ev or the first
// stage's input is full (backpressure), until ctx is done. Emit always takes ownership of ev:
// on success it will be completed through Source.Complete; on error (ctx done) it is
// completed at once with ok=false. The caller must not use ev after Emit.
//
// An event larger than the whole budget is never admitted: it goes to the error handler with
// ErrTooLarge (see tooLarge) and is completed per its answer, and Emit returns nil. While
// another oversized event waits for its handler, Emit waits for it (until ctx is done).
func (e *Emitter) Emit(ctx context.Context, ev *stage.Event) error {
	p := e.p
	size := p.cfg.size(ev)
	if size > p.budget.Limit() {
		select {
		case p.oversized <- struct{}{}:
		case <-ctx.Done():
			e.begin(ev, 0).Abandon()
			return ctx.Err()
		}
		e.tooLarge(ev, size)
		return nil
	}
	if err := e.acquire(ctx, size); err != nil {
		e.begin(ev, 0).Abandon()
		return err
	}
	l := e.begin(ev, size)
	if err := flow.Emit(ctx, p.first, ev, l); err != nil {
		l.Abandon()
		return err
	}
	return nil
}

// TryEmit hands ev to the pipeline only if the budget and the first stage's input have room
// now; it never blocks. On true the pipeline owns ev (as with Emit); on false the caller still
// does and may try again later (the Kafka source pauses the partition meanwhile). An event
// larger than the budget is handled as by Emit, and TryEmit returns true, or false while
// another oversized event waits for its error handler.
func (e *Emitter) TryEmit(ctx context.Context, ev *stage.Event) bool {
	return e.tryEmitWait(ctx, ev, 0)
}

// tryEmitWait is TryEmit that, when the budget has room but the first stage's input is full or
// the in-flight window (WithInitialWindow) is, waits up to wait for that input to take ev or
// for the window to have room. It never waits for the budget itself. A polling source
// uses it to pace itself with the first stage (librdkafka's bounded prefetch queue holds the
// rest) instead of pausing on every burst.
func (e *Emitter) tryEmitWait(ctx context.Context, ev *stage.Event, wait time.Duration) bool {
	p := e.p
	size := p.cfg.size(ev)
	if size > p.budget.Limit() {
		select {
		case p.oversized <- struct{}{}:
		default:
			return false
		}
		e.tooLarge(ev, size)
		return true
	}
	if !e.take(size) && (wait <= 0 || !e.takeWithin(ctx, size, wait)) {
		return false
	}
	l := e.begin(ev, size)
	if !flow.TryEmit(p.first, ev, l) && (wait <= 0 || !e.emitWithin(ctx, ev, l, wait)) {
		// Undo Begin without finishing: the caller keeps the event.
		p.emitted.Add(-1)
		p.budget.Release(size)
		l.Unbegin()
		return false
	}
	return true
}

// stalled tells the pipeline that the source is blocked: it holds events it cannot emit (its
// ordering or limits admit none of them, or the budget or the first stage's input is full)
// and waits for events in flight to finish. If every event in flight then waits in a partial
// batch, nothing else could ever finish one, so the batch stages without Linger flush theirs
// (stage.BatchConfig). A polling source calls it once per poll that found it blocked (about
// every 10 ms while it is), never per event; it costs a read of each batch stage's counters
// (nothing without batch stages). Emit calls it itself while it waits for the budget.
func (e *Emitter) stalled() {
	p := e.p
	in := p.inFlight()
	if in == 0 || len(p.batches) == 0 {
		return
	}
	var batched int64
	for _, n := range p.batches {
		batched += n.Stats().Batched
	}
	// An event that finished meanwhile is progress: the source may emit again before any
	// batch needs flushing. A FlatMap's children count one each in Batched, so Batched may
	// exceed the events behind it: then a batch may be flushed while a sibling still moves,
	// but a flush that is needed is never missed.
	if batched == 0 || in > batched || p.inFlight() != in {
		return
	}
	next := make(chan struct{})
	close(*p.stalled.Swap(&next))
}

// stallEvery is how often Emit, while it waits for the budget, reports the source stalled.
const stallEvery = 10 * time.Millisecond

// acquire takes size bytes of the budget for Emit, waiting until ctx is done; while it waits
// it reports the source stalled every stallEvery, since the bytes may be held by a partial
// batch that only a stall flushes.
func (e *Emitter) acquire(ctx context.Context, size int64) error {
	b := e.p.budget
	for {
		if e.take(size) {
			return nil
		}
		e.stalled()
		wctx, cancel := context.WithTimeout(ctx, stallEvery)
		err := b.Acquire(wctx, size)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// tryEmitBurst is tryEmitWait for a burst of up to flow.MaxBurst events, in order: it hands
// the pipeline the longest prefix of evs it can and returns its length; the caller still owns
// evs[n:]. When the first stage takes bursts (flow.Edge.TakesBursts) and the budget has room
// for the whole burst, the burst costs one budget acquisition and one slot of the first edge;
// otherwise the events go one by one (tryEmitWait). A polling source uses it to amortise the
// hand-over across the messages one poll returns.
func (e *Emitter) tryEmitBurst(ctx context.Context, evs []*stage.Event, wait time.Duration) int {
	p := e.p
	if len(evs) > 1 && len(evs) <= flow.MaxBurst && p.first.TakesBursts() {
		var total int64
		sizes := [flow.MaxBurst]int64{}
		lives := [flow.MaxBurst]*flow.Life{}
		fits := true
		for i, ev := range evs {
			sizes[i] = p.cfg.size(ev)
			fits = fits && sizes[i] <= p.budget.Limit()
			total += sizes[i]
		}
		took := fits && e.take(total)
		if fits && !took && e.windowBound(total, wait) {
			if !e.takeWithin(ctx, total, wait) {
				return 0 // the window stayed full: one by one would not fare better
			}
			took = true
		}
		if took {
			p.emitted.Add(int64(len(evs)))
			for i, ev := range evs {
				lives[i] = lifeOf(ev)
				lives[i].Begin(ev.Topic, ev.Partition, ev.Offset, ev.SourceTag, sizes[i], p.fin)
			}
			if flow.EmitBurst(ctx, p.first, evs, lives[:len(evs)], wait) {
				return len(evs)
			}
			p.emitted.Add(-int64(len(evs)))
			p.budget.Release(total)
			for i := range evs {
				lives[i].Unbegin()
			}
			return 0 // the edge stayed full: one by one would not fare better
		}
	}
	for i, ev := range evs {
		if !e.tryEmitWait(ctx, ev, wait) {
			return i
		}
	}
	return len(evs)
}

// take acquires size bytes of the budget if they fit in the in-flight window now. When they do
// not, but fit in the budget, and the stages are starved, it grows the window first (see
// WithInitialWindow). It never blocks.
func (e *Emitter) take(size int64) bool {
	b := e.p.budget
	if b.TryAcquire(size) {
		return true
	}
	for b.InFlight()+size <= b.Limit() && e.starved() && b.grow(size) {
		if b.TryAcquire(size) {
			return true
		}
	}
	return false
}

// takeWithin waits up to wait for size bytes of the window, when the window (not the budget)
// is what has no room: events in flight finishing free it, as a stage taking input frees its
// edge. A polling source thus paces itself with the stages instead of pausing its partitions.
// It reports false at once when the budget itself is full or size exceeds the window. Only a
// finished event wakes the wait, not a stage running out of input meanwhile: at the end it looks
// again whether the stages are starved (take) before giving up.
func (e *Emitter) takeWithin(ctx context.Context, size int64, wait time.Duration) bool {
	if !e.windowBound(size, wait) {
		return false
	}
	b := e.p.budget
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return b.Acquire(wctx, size) == nil || (ctx.Err() == nil && e.take(size))
}

// windowBound reports whether waiting up to wait could admit size bytes: the window, not the
// budget, has no room for them now, and they fit in it.
func (e *Emitter) windowBound(size int64, wait time.Duration) bool {
	b := e.p.budget
	return wait > 0 && b.InFlight()+size <= b.Limit() && size <= b.Window()
}

// starved reports whether no stage has input waiting on its edge: every event in flight is
// then in a call, a partial batch or a pending delivery, so the window (not the stages) is
// what holds the pipeline back. One read of each edge's length, only when the window is full.
func (e *Emitter) starved() bool {
	for _, n := range e.p.nodes {
		if n.queued() > 0 {
			return false
		}
	}
	return true
}

func (e *Emitter) emitWithin(ctx context.Context, ev *stage.Event, l *flow.Life, wait time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return flow.Emit(ctx, e.p.first, ev, l) == nil
}

// begin counts ev as emitted and prepares its lifecycle, which it returns.
func (e *Emitter) begin(ev *stage.Event, size int64) *flow.Life {
	e.p.emitted.Add(1)
	l := lifeOf(ev)
	l.Begin(ev.Topic, ev.Partition, ev.Offset, ev.SourceTag, size, e.p.fin)
	return l
}

// tooLarge hands an event larger than the whole budget (never admitted: the budget could not
// hold it) to the error handler with ErrTooLarge, and completes it per the handler's answer.
// The caller took the p.oversized token, given back once the handler returned. The handler
// runs on the pipeline's error-handling goroutine, never on the caller's: a polling source
// must keep polling (max.poll.interval.ms) while a dead-letter topic that is down keeps the
// handler retrying; meanwhile the event stays in flight and is not committed.
func (e *Emitter) tooLarge(ev *stage.Event, size int64) {
	p := e.p
	p.tooLarge.Add(1)
	l := e.begin(ev, 0)
	err := fmt.Errorf("%w: %d bytes, budget %d", ErrTooLarge, size, p.budget.Limit())
	p.errQueue.later(func(ctx context.Context) {
		if ctx.Err() != nil { // hard stop, or the close phase gave up: not committed
			<-p.oversized
			l.Abandon()
			return
		}
		f := stage.NewFailure("source", err, 1, []*stage.Event{ev})
		herr := p.handle(ctx, f)
		// Give the token back before completing, so the source retrying a held oversized
		// message on this completion finds it free.
		<-p.oversized
		if herr != nil {
			p.fail(fmt.Errorf("pipeline %q: error handler of %v: %w", p.cfg.name, f, herr))
			l.Abandon()
			return
		}
		l.Complete()
	})
}

// lifeOf returns the engine's lifecycle of ev.
func lifeOf(ev *stage.Event) *flow.Life { return flow.Hooks.Life(ev) }

// burstEmitter is the Emitter as a polling source sees it (handover.Emitter).
type burstEmitter struct{ e *Emitter }

func (b burstEmitter) TryEmitBurst(ctx context.Context, evs []*stage.Event, wait time.Duration) int {
	return b.e.tryEmitBurst(ctx, evs, wait)
}
func (b burstEmitter) TryEmitWait(ctx context.Context, ev *stage.Event, wait time.Duration) bool {
	return b.e.tryEmitWait(ctx, ev, wait)
}
func (b burstEmitter) Stalled()                   { b.e.stalled() }
func (b burstEmitter) Size(ev *stage.Event) int64 { return b.e.p.cfg.size(ev) }
func (b burstEmitter) Limit() int64               { return b.e.p.budget.Limit() }
func (b burstEmitter) InFlightBytes() int64       { return b.e.p.budget.InFlight() }

func init() {
	handover.Of = func(emit any) handover.Emitter { return burstEmitter{emit.(*Emitter)} }
}
