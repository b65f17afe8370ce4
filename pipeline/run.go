package pipeline

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/internal/workers"
	"github.com/sluicehq/sluice/stage"
)

// ErrRunTwice is returned by a second Run of the same pipeline.
var ErrRunTwice = errors.New("sluice: pipeline already ran (build a new one)")

// Pipeline is a built, runnable pipeline. Run it once.
type Pipeline struct {
	src    Source
	cfg    config
	nodes  []node
	first  *flow.Edge[*stage.Event]
	fin    *finisher // the flow.Finisher of the pipeline's events
	calls  int       // the call pool's size (WithMaxCalls); 0: no pool, calls run on their stage's workers
	budget *byteBudget
	ran    atomic.Bool

	// The source side writes emitted, the completing side finished: kept on separate cache
	// lines, as the two sides run on different cores. In flight = emitted - finished.
	emitted                     atomic.Int64
	_                           [56]byte
	finished                    atomic.Int64
	_                           [56]byte
	completed, failed, tooLarge atomic.Uint64
	srcDone                     atomic.Bool   // set once the source's Run returned
	idle                        chan struct{} // closed when srcDone and nothing is in flight
	idleOnce                    sync.Once

	// oversized holds a token while an oversized event waits for its error handler (see
	// Emitter.tooLarge): at most one does, so a dead-letter topic that is down does not let a
	// polling source read oversized records (which the budget does not count) without bound.
	oversized chan struct{}
	errQueue  *errorQueue // the error-handling goroutine of the Run; set by Run

	// stalled is the current generation of the stall signal (stage.Env.Stalled): closed and
	// replaced by Emitter.Stalled, so any number of batch stages can wait on it.
	stalled atomic.Pointer[chan struct{}]
	batches []node // the batch stages, whose partial batches Emitter.Stalled counts

	errMu    sync.Mutex // guards firstErr
	firstErr error
	stopHard context.CancelFunc // cancels the hard-stop context; set by Run
	stopSrc  context.CancelFunc // cancels the source's context; set by Run
}

func newPipeline(b *Builder) *Pipeline {
	p := &Pipeline{src: b.src, cfg: b.cfg, nodes: b.nodes, first: b.first.edge, budget: newBudget(b.cfg.budget, initialWindow(b.cfg)), idle: make(chan struct{}),
		oversized: make(chan struct{}, 1)}
	p.fin = &finisher{p}
	total := 0 // the most calls that can run at once without a cap
	for _, n := range b.nodes {
		total += n.Concurrency()
		if n.Kind() == flow.KindBatch {
			p.batches = append(p.batches, n)
		}
	}
	if b.cfg.maxCalls > 0 && b.cfg.maxCalls < total {
		p.calls = b.cfg.maxCalls // the cap binds: calls hand over to the pool
	}
	stalled := make(chan struct{})
	p.stalled.Store(&stalled)
	return p
}

// Run runs the pipeline until the source is exhausted and everything drained (returns nil), a
// fatal error (returns the first one, after stopping hard), or ctx is cancelled: then the
// source stops, in-flight events drain for up to the drain timeout, the pipeline stops hard
// if they did not, and the close phase runs within the close timeout (error handlers still
// queued finish, async sinks flush, every event finishes), then the source commits and closes,
// and Run returns nil.
//
// Blocking: Run returns within the drain timeout plus twice the close timeout (plus 100 ms
// for each close hook and the source's Close to return once their context is done), even when
// user code ignores its context: after a hard stop it waits for stage calls, error handlers
// and close hooks at most the close timeout, then returns an error saying calls are still
// running (their events are not committed; their goroutines end when the calls return). Otherwise no
// goroutine started by Run outlives it; the Kafka source documents the one exception librdkafka
// imposes (a commit the group coordinator never answers). Run may be called once.
func (p *Pipeline) Run(ctx context.Context) error {
	if !p.ran.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	var calls *flow.Calls // nil: calls run on their stage's workers
	if p.calls > 0 {
		var err error
		calls, err = flow.NewCalls(p.calls, func(pe *workers.PanicError) {
			p.fail(fmt.Errorf("pipeline %q: %w", p.cfg.name, &stage.PanicError{Stage: "call pool", Value: pe.Value, Stack: pe.Stack}))
		})
		if err != nil {
			return err
		}
	}
	hardCtx, stopHard := context.WithCancel(context.WithoutCancel(ctx))
	srcCtx, stopSrc := context.WithCancel(ctx)
	p.errMu.Lock()
	p.stopHard, p.stopSrc = stopHard, stopSrc
	p.errMu.Unlock()
	defer stopHard()
	defer stopSrc()
	p.errQueue = newErrorQueue(hardCtx) // stopped by closeAll

	var wg sync.WaitGroup
	env := &flow.Env{
		Ctx:    hardCtx,
		Calls:  calls,
		Fail:   p.fail,
		Handle: p.handle,
		Later:  p.errQueue.later,
		Logger: p.cfg.logger,
		Tracer: p.cfg.tracer,
		// Go runs one of the pipeline's long-lived tasks (the source, the stage workers),
		// whose number Build fixed; user calls run on the call pool instead.
		Go: func(task func()) error {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					if r := recover(); r != nil {
						p.fail(fmt.Errorf("pipeline %q: %w", p.cfg.name, &stage.PanicError{Stage: "pipeline task", Value: r, Stack: debug.Stack()}))
					}
				}()
				task()
			}()
			return nil
		},
	}
	env.Stalled = func() <-chan struct{} { return *p.stalled.Load() }
	started := true
	for _, n := range p.nodes {
		if err := n.start(env); err != nil {
			p.fail(err)
			started = false
			break
		}
	}
	if !started || env.Go(func() { p.runSource(srcCtx) }) != nil {
		p.first.Close()
		p.sourceExited()
	}

	stagesDone := make(chan struct{})
	go func() { wg.Wait(); close(stagesDone) }()
	closeBy, stuck := p.waitDrain(ctx, hardCtx, stagesDone)
	for _, n := range p.nodes { // only a hard stop leaves messages behind
		n.discard()
	}
	p.closeAll(ctx, closeBy)
	wctx, cancel := context.Background(), context.CancelFunc(func() {})
	if stuck { // tasks stuck in user code: do not wait for them again
		wctx, cancel = context.WithTimeout(wctx, 100*time.Millisecond)
	}
	defer cancel()
	if err := calls.Close(wctx); err != nil && !stuck {
		p.fail(err)
	}
	return p.err()
}

// runSource runs the source and closes the first edge after it.
func (p *Pipeline) runSource(ctx context.Context) {
	defer p.sourceExited()
	defer p.first.Close()
	err := p.src.Run(ctx, &Emitter{p: p})
	if err != nil && ctx.Err() == nil {
		p.fail(fmt.Errorf("pipeline %q: source: %w", p.cfg.name, err))
	}
}

func (p *Pipeline) sourceExited() {
	p.srcDone.Store(true)
	if p.inFlight() == 0 {
		p.idleOnce.Do(func() { close(p.idle) })
	}
}

// waitDrain waits for every stage task to exit and returns the deadline of the close phase.
// Once ctx is cancelled it waits at most the drain timeout, then stops hard. After a hard stop
// (the drain timeout, or a fatal error) it waits at most the close timeout for the tasks to see
// it: a user function that ignores its context can keep a worker forever, and Run must not
// wait for it. It then records an error and Run goes on without those tasks (their events are
// not committed; the goroutines end when the calls return). The close phase shares that one
// close timeout, so Run returns within drain + 2 × close timeout (see closeAll).
func (p *Pipeline) waitDrain(ctx, hardCtx context.Context, stagesDone <-chan struct{}) (closeBy time.Time, stuck bool) {
	select {
	case <-stagesDone:
		return time.Now().Add(p.cfg.closeTimeout), false
	case <-ctx.Done():
	case <-hardCtx.Done(): // a fatal error stopped the pipeline hard
	}
	if hardCtx.Err() == nil {
		t := time.NewTimer(p.cfg.drainTimeout)
		select {
		case <-stagesDone:
			t.Stop()
			return time.Now().Add(p.cfg.closeTimeout), false
		case <-hardCtx.Done():
		case <-t.C:
			p.cfg.logger.Warn("sluice: drain timeout expired, stopping hard", "pipeline", p.cfg.name, "timeout", p.cfg.drainTimeout, "in_flight_events", p.inFlight())
			p.stopHard()
		}
		t.Stop()
	}
	closeBy = time.Now().Add(p.cfg.closeTimeout)
	t := time.NewTimer(p.cfg.closeTimeout)
	defer t.Stop()
	select {
	case <-stagesDone:
		return closeBy, false
	case <-t.C:
		p.fail(fmt.Errorf("pipeline %q: stage calls still running %v after the hard stop (a function that ignores its context?): Run returns without them; their events are not committed (%d event(s) in flight)", p.cfg.name, p.cfg.closeTimeout, p.inFlight()))
		return closeBy, true
	}
}

// closeAll runs the close phase, within closeBy (one close timeout): it waits for the queued
// error handlers (a dead-letter handler needs its producer), runs the stages' close hooks
// (async sinks flush and end their outstanding events), waits for every event to finish, and
// stops the error-handling goroutine (a handler still retrying gets a cancelled context: its
// event is not committed). Then the source commits and closes, within a close timeout of its
// own.
func (p *Pipeline) closeAll(ctx context.Context, closeBy time.Time) {
	cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), closeBy)
	defer cancel()
	p.errQueue.waitIdle(cctx.Done())
	for _, n := range p.nodes {
		p.bounded(cctx, "stage "+strconv.Quote(n.Name())+" close hook", n.Close)
	}
	select {
	case <-p.idle:
	case <-cctx.Done():
		select {
		case <-p.idle: // finished just as the close timeout expired
		default:
			p.fail(fmt.Errorf("pipeline %q: %d event(s) still unfinished after the close timeout (%v): an error handler still retrying, or an async sink that did not end its Done", p.cfg.name, p.inFlight(), p.cfg.closeTimeout))
		}
	}
	p.errQueue.stop()
	if c, ok := p.src.(closer); ok {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.closeTimeout)
		p.bounded(sctx, "source close", c.Close)
		cancel()
	}
}

// hookGrace is how long bounded waits, once ctx is done, for a function that honours it to
// return.
const hookGrace = 100 * time.Millisecond

// bounded runs fn (user code: a close hook, the source's Close) with ctx and waits for it until
// ctx is done (and hookGrace more): an error stops Run with it, a panic is a *stage.PanicError, and a call still
// running at ctx's deadline is reported and left behind (its goroutine ends when it returns;
// Run's bound holds, as for a stage call that ignores its context).
func (p *Pipeline) bounded(ctx context.Context, what string, fn func(context.Context) error) {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- &stage.PanicError{Stage: what, Value: r, Stack: debug.Stack()}
			}
		}()
		done <- fn(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		// A function that honours its context returns right after it is done (the Kafka
		// source's Close returns at its deadline): give it hookGrace to do so.
		t := time.NewTimer(hookGrace)
		select {
		case err = <-done:
		case <-t.C:
			err = fmt.Errorf("%s still running %v after the close timeout (%v), ignoring its context: Run returns without it", what, hookGrace, p.cfg.closeTimeout)
		}
		t.Stop()
	}
	if err != nil {
		p.fail(fmt.Errorf("pipeline %q: %s: %w", p.cfg.name, what, err))
	}
}

// fail records the first fatal error and stops the pipeline hard.
func (p *Pipeline) fail(err error) {
	p.errMu.Lock()
	if p.firstErr == nil {
		p.firstErr = err
		p.cfg.logger.Error("sluice: fatal error, stopping", "pipeline", p.cfg.name, "err", err)
	}
	stopSrc, stopHard := p.stopSrc, p.stopHard
	p.errMu.Unlock()
	if stopSrc != nil {
		stopSrc()
		stopHard()
	}
}

func (p *Pipeline) err() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.firstErr
}

// handle is the error handler of the Handle policy: the one set by WithErrorHandler, or the
// default, which logs and skips a failure, except one whose output record was not written
// (stage.ErrNotDelivered): skipping it would commit its input without its output, so it stops
// Run with an error naming the record.
//
// A panic in the user's handler is recovered and returned as a *stage.PanicError (stage
// "<stage> error handler"), which the caller treats like any error of the handler: the
// pipeline stops and the event is not committed. Unrecovered, it would kill the process (on
// the error-handling goroutine) or leave a stage's input undrained and Run hanging (on a
// worker).
func (p *Pipeline) handle(ctx context.Context, fe error) (err error) {
	f := fe.(*stage.Failure)
	if p.cfg.onError != nil {
		defer func() {
			if r := recover(); r != nil {
				err = &stage.PanicError{Stage: f.Stage + " error handler", Value: r, Stack: debug.Stack()}
			}
		}()
		return p.cfg.onError(ctx, f)
	}
	if errors.Is(f.Err, stage.ErrNotDelivered) {
		return fmt.Errorf("pipeline %q: the default error handler never skips a record that was not written (set WithErrorHandler, with a dead-letter topic for instance, to go on)", p.cfg.name)
	}
	p.cfg.logger.Error("sluice: message failed, skipped", "pipeline", p.cfg.name, "stage", f.Stage, "attempts", f.Attempts, "err", f)
	return nil
}

// complete calls the source's Complete (or CompleteMany) through fn. A panic in it stops the
// pipeline with a *stage.PanicError; the pipeline's own bookkeeping of the events (budget,
// counts, recycling) goes on, so Run still returns within its bound.
func (p *Pipeline) complete(fn func()) {
	defer func() {
		if r := recover(); r != nil {
			p.fail(fmt.Errorf("pipeline %q: %w", p.cfg.name, &stage.PanicError{Stage: "source Complete", Value: r, Stack: debug.Stack()}))
		}
	}()
	fn()
}

// eventBufs are FinishMany's slices of the events of a burst (a slice handed to the source's
// CompleteMany escapes: one per call would be garbage on the hot path).
var eventBufs = sync.Pool{New: func() any {
	b := make([]*stage.Event, 0, flow.MaxBurst)
	return &b
}}

// finisher is the pipeline as the flow.Finisher of its events. Its methods are the engine's:
// no one else may finish an event.
type finisher struct{ p *Pipeline }

// Finish tells the source, returns the budget and recycles the event. Called exactly once per
// emitted event.
func (f *finisher) Finish(l *flow.Life, ok bool) {
	p := f.p
	ev := l.Owner.(*stage.Event)
	size := l.Size()
	p.complete(func() { p.src.Complete(ev, ok) })
	if ok {
		p.completed.Add(1)
	} else {
		p.failed.Add(1)
	}
	if size > 0 {
		p.budget.Release(size)
	}
	ev.Release()
	if p.finished.Add(1) == p.emitted.Load() && p.srcDone.Load() {
		p.idleOnce.Do(func() { close(p.idle) })
	}
}

// FinishMany is Finish for the events a worker finished together (a burst), with one call to
// the source (CompleteMany, when it has it) and one budget release. The worker recycles the
// events after it.
func (f *finisher) FinishMany(ls []*flow.Life, ok []bool) {
	p := f.p
	var size int64
	var bad uint64
	buf := eventBufs.Get().(*[]*stage.Event)
	evs := (*buf)[:0]
	for i, l := range ls {
		size += l.Size()
		if !ok[i] {
			bad++
		}
		evs = append(evs, l.Owner.(*stage.Event))
	}
	p.complete(func() {
		if mc, isMany := p.src.(manyCompleter); isMany {
			mc.CompleteMany(evs, ok)
		} else {
			for i, ev := range evs {
				p.src.Complete(ev, ok[i])
			}
		}
	})
	clear(evs)
	*buf = evs[:0]
	eventBufs.Put(buf)
	p.completed.Add(uint64(len(ls)) - bad)
	if bad > 0 {
		p.failed.Add(bad)
	}
	if size > 0 {
		p.budget.Release(size)
	}
	if p.finished.Add(int64(len(ls))) == p.emitted.Load() && p.srcDone.Load() {
		p.idleOnce.Do(func() { close(p.idle) })
	}
}

// inFlight returns how many emitted events have not finished yet.
func (p *Pipeline) inFlight() int64 { return p.emitted.Load() - p.finished.Load() }
