package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/stage"
)

// Emitter is how a source hands events to the pipeline. It is safe for concurrent use.
type Emitter struct {
	p *Pipeline
}

// Budget returns the pipeline's budget, for sources that pause on pressure.
func (e *Emitter) Budget() *Budget { return e.p.budget }

// Size returns the budget bytes of ev according to the pipeline's size function.
func (e *Emitter) Size(ev *stage.Event) int64 { return e.p.cfg.size(ev) }

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
			e.begin(ev, 0)
			stage.Abandon(ev)
			return ctx.Err()
		}
		e.tooLarge(ev, size)
		return nil
	}
	if err := e.acquire(ctx, size); err != nil {
		e.begin(ev, 0)
		stage.Abandon(ev)
		return err
	}
	e.begin(ev, size)
	if err := stage.EmitEvent(ctx, p.first, ev); err != nil {
		stage.Abandon(ev)
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
	return e.TryEmitWait(ctx, ev, 0)
}

// TryEmitWait is TryEmit that, when the budget has room but the first stage's input is full,
// waits up to wait for that input to take ev. It never waits for the budget. A polling source
// uses it to pace itself with the first stage (librdkafka's bounded prefetch queue holds the
// rest) instead of pausing on every burst.
func (e *Emitter) TryEmitWait(ctx context.Context, ev *stage.Event, wait time.Duration) bool {
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
	if !p.budget.TryAcquire(size) {
		return false
	}
	e.begin(ev, size)
	if !stage.TryEmitEvent(p.first, ev) && (wait <= 0 || !e.emitWithin(ctx, ev, wait)) {
		// Undo Begin without finishing: the caller keeps the event.
		p.emitted.Add(-1)
		p.budget.Release(size)
		stage.Unbegin(ev)
		return false
	}
	return true
}

// Stalled tells the pipeline that the source is blocked: it holds events it cannot emit (its
// ordering or limits admit none of them, or the budget or the first stage's input is full)
// and waits for events in flight to finish. If every event in flight then waits in a partial
// batch, nothing else could ever finish one, so the batch stages without Linger flush theirs
// (stage.BatchConfig). A polling source calls it once per poll that found it blocked (about
// every 10 ms while it is), never per event; it costs a read of each batch stage's counters
// (nothing without batch stages). Emit calls it itself while it waits for the budget.
func (e *Emitter) Stalled() {
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
	if b.TryAcquire(size) {
		return nil
	}
	for {
		e.Stalled()
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

// MaxRun is the most events TryEmitRun takes in one call.
const MaxRun = stage.MaxRun

// TryEmitRun is TryEmitWait for a run of up to MaxRun events, in order: it hands the pipeline
// the longest prefix of evs it can and returns its length; the caller still owns evs[n:]. When
// the first stage takes runs (stage.Edge.TakesRuns) and the budget has room for the whole
// run, the run costs one budget acquisition and one slot of the first edge; otherwise the
// events go one by one (TryEmitWait). A polling source uses it to amortise the hand-over
// across the messages one poll burst returns.
func (e *Emitter) TryEmitRun(ctx context.Context, evs []*stage.Event, wait time.Duration) int {
	p := e.p
	if len(evs) > 1 && len(evs) <= MaxRun && p.first.TakesRuns() {
		var total int64
		sizes := [MaxRun]int64{}
		fits := true
		for i, ev := range evs {
			sizes[i] = p.cfg.size(ev)
			fits = fits && sizes[i] <= p.budget.Limit()
			total += sizes[i]
		}
		if fits && p.budget.TryAcquire(total) {
			p.emitted.Add(int64(len(evs)))
			for i, ev := range evs {
				ev.Begin(sizes[i], p)
			}
			if stage.EmitEvents(ctx, p.first, evs, wait) {
				return len(evs)
			}
			p.emitted.Add(-int64(len(evs)))
			p.budget.Release(total)
			for _, ev := range evs {
				stage.Unbegin(ev)
			}
			return 0 // the edge stayed full: one by one would not fare better
		}
	}
	for i, ev := range evs {
		if !e.TryEmitWait(ctx, ev, wait) {
			return i
		}
	}
	return len(evs)
}

func (e *Emitter) emitWithin(ctx context.Context, ev *stage.Event, wait time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return stage.EmitEvent(ctx, e.p.first, ev) == nil
}

func (e *Emitter) begin(ev *stage.Event, size int64) {
	e.p.emitted.Add(1)
	ev.Begin(size, e.p)
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
	e.begin(ev, 0)
	err := fmt.Errorf("%w: %d bytes, budget %d", ErrTooLarge, size, p.budget.Limit())
	p.errQueue.later(func(ctx context.Context) {
		if ctx.Err() != nil { // hard stop, or the close phase gave up: not committed
			<-p.oversized
			stage.Abandon(ev)
			return
		}
		f := stage.NewFailure("source", err, 1, []*stage.Event{ev})
		herr := p.handle(ctx, f)
		// Give the token back before completing, so the source retrying a held oversized
		// message on this completion finds it free.
		<-p.oversized
		if herr != nil {
			p.fail(fmt.Errorf("pipeline %q: error handler of %v: %w", p.cfg.name, f, herr))
			stage.Abandon(ev)
			return
		}
		stage.Complete(ev)
	})
}
