// Package pipeline links typed stages into a running pipeline with one byte budget, and runs
// it: a source emits pooled events, stages process them over fixed-capacity edges on a bounded
// worker pool, and every source event is completed exactly once, which is what the source
// commits on.
//
// Edges are typed by the compiler: Then and To are top-level generic functions because Go has
// no generic methods.
//
//	b := pipeline.New(src, pipeline.WithBudget(64<<20))
//	orders := pipeline.Then(b.Source(), stage.Map("decode", decode))
//	pipeline.To(orders, stage.Sink("store", store))
//	p, err := b.Build() // wiring and configuration errors, naming the field
//	err = p.Run(ctx)    // blocks; cancel ctx to drain and stop
package pipeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/internal/ext"
	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/stage"
)

// ErrInvalid is wrapped by every construction error of sluice: Build's (each naming its stage
// and field, stage options included) and the Kafka source's and producer's (kafka.ErrConfig
// wraps it).
var ErrInvalid = flow.ErrInvalid

// ErrTooLarge is the error given to the error handler for an event larger than the budget.
var ErrTooLarge = errors.New("event larger than the pipeline budget")

// Source produces the pipeline's events.
//
// A source that has work to do once every emitted event completed (a final commit, closing a
// client) also has a method Close(ctx context.Context) error: the pipeline calls it once,
// after the drain, before Run returns. A source that knows the pipeline options it needs has a
// method PipelineOptions() []Option: New applies them first (the Kafka source brings its
// in-flight budget and largest message that way).
type Source interface {
	// Run emits events with emit until ctx is done (then it returns promptly, nil) or the
	// source is exhausted (nil) or fails (the error is fatal). The pipeline closes its first
	// edge when Run returns.
	Run(ctx context.Context, emit *Emitter) error
	// Complete is called exactly once per emitted event, from any goroutine, when the event
	// and everything derived from it have ended. ok is false when the event was not finished
	// (a fatal error or a hard stop): it must not be committed. The event is recycled right
	// after Complete returns; Complete must not keep it, and should not block.
	Complete(ev *stage.Event, ok bool)
}

// manyCompleter is a source that completes several events in one call (one lock instead of
// one per event), as the Kafka source does: the pipeline then calls CompleteMany for the
// events a worker finished together; ok[i] is evs[i]'s outcome. Complete's rules apply to
// every event; these are already retired, so their fields may be read, nothing else.
type manyCompleter interface {
	CompleteMany(evs []*stage.Event, ok []bool)
}

// closer is a source with a Close (see Source).
type closer interface {
	Close(ctx context.Context) error
}

// node is the untyped view of a linked stage.
type node interface {
	Name() string
	Kind() string
	Err() error
	Concurrency() int
	Terminal() bool
	Stats() stage.Stats
	FitsBudget(budget, maxEventBytes int64) error
	Close(ctx context.Context) error
	start(env *flow.Env) error
	discard() int
	dangling() bool
	queued() int // messages waiting on the stage's input edge now
	public() any // the *stage.Stage it was linked from
}

// port is a stream's edge, created when a stage consumes the stream.
type port[T any] struct {
	edge   *flow.Edge[T]
	source bool // the source's output: the stage reading it may take bursts
}

// Stream is a typed stream of messages: the output of the source or of a stage, consumed by
// exactly one stage (Then or To).
type Stream[T any] struct {
	b    *Builder
	from string
	p    *port[T]
}

// Builder assembles a pipeline. Its methods are not safe for concurrent use.
type Builder struct {
	src   Source
	cfg   config
	nodes []node
	errs  []error
	names map[string]bool
	first *port[*stage.Event]
	sinks int
	built bool
}

// New starts a pipeline on src. Link stages from Source() with Then and To, then Build.
//
// A source that knows the options it needs (a method PipelineOptions() []Option, as the Kafka
// source has: its in-flight budget and largest message) gets them applied first; opts come
// after and win.
func New(src Source, opts ...Option) *Builder {
	b := &Builder{src: src, cfg: defaultConfig(), names: map[string]bool{}, first: &port[*stage.Event]{source: true}}
	if so, ok := src.(interface{ PipelineOptions() []Option }); ok {
		opts = append(so.PipelineOptions(), opts...)
	}
	for _, o := range opts {
		if o != nil { // as stage options: a nil option is no option
			o(&b.cfg)
		}
	}
	if src == nil {
		b.errs = append(b.errs, fmt.Errorf("pipeline: Source must not be nil: %w", ErrInvalid))
	}
	return b
}

// Source returns the stream of source events. Consume it with exactly one Then or To.
func (b *Builder) Source() Stream[*stage.Event] {
	return Stream[*stage.Event]{b: b, from: "source", p: b.first}
}

// linked is a stage bound to its input and output ports.
type linked[In, Out any] struct {
	*flow.Stage[In, Out]
	pub *stage.Stage[In, Out]
	in  *port[In]
	out *port[Out] // nil for sinks
}

func (l *linked[In, Out]) Stats() stage.Stats { return l.pub.Stats() }

func (l *linked[In, Out]) start(env *flow.Env) error {
	var out *flow.Edge[Out]
	if l.out != nil {
		out = l.out.edge
	}
	return l.Start(env, l.in.edge, out)
}

func (l *linked[In, Out]) public() any    { return l.pub }
func (l *linked[In, Out]) discard() int   { return l.in.edge.Discard() }
func (l *linked[In, Out]) queued() int    { return l.in.edge.Len() }
func (l *linked[In, Out]) dangling() bool { return l.out != nil && l.out.edge == nil }

func link[In, Out any](s Stream[In], st *stage.Stage[In, Out], terminal bool) *linked[In, Out] {
	b := s.b
	if b == nil {
		panic("sluice/pipeline: Stream not made by a Builder")
	}
	if st == nil {
		b.errs = append(b.errs, fmt.Errorf("pipeline: stage after %q is nil: %w", s.from, ErrInvalid))
		return nil
	}
	core := flow.Hooks.Core(st).(*flow.Stage[In, Out])
	name := core.Name()
	if b.names[name] {
		b.errs = append(b.errs, fmt.Errorf("pipeline: Name %q is used by two stages: %w", name, ErrInvalid))
	}
	if name == reservedName {
		b.errs = append(b.errs, fmt.Errorf("pipeline: stage name %q is reserved for the source (in stats, metrics and the pipeline page): %w", name, ErrInvalid))
	}
	b.names[name] = true
	if s.p.edge != nil {
		b.errs = append(b.errs, fmt.Errorf("pipeline: stage %q: the output of %q is already consumed (one consumer per stream): %w", name, s.from, ErrInvalid))
	}
	if core.Terminal() != terminal {
		if terminal {
			b.errs = append(b.errs, fmt.Errorf("pipeline: stage %q: To needs a sink, got a %s: %w", name, core.Kind(), ErrInvalid))
		} else {
			b.errs = append(b.errs, fmt.Errorf("pipeline: stage %q: a sink must be attached with To: %w", name, ErrInvalid))
		}
	}
	if err := core.Err(); err != nil {
		b.errs = append(b.errs, err)
	}
	// The source and the stage before both send bursts on an edge whose stage takes them.
	s.p.edge = core.NewInput()
	l := &linked[In, Out]{Stage: core, pub: st, in: s.p}
	if !terminal {
		l.out = &port[Out]{}
	}
	b.nodes = append(b.nodes, l)
	return l
}

// reservedName names the source wherever stages are listed by name.
const reservedName = "source"

// Then links st after s and returns st's output stream.
func Then[In, Out any](s Stream[In], st *stage.Stage[In, Out]) Stream[Out] {
	l := link(s, st, false)
	if l == nil {
		return Stream[Out]{b: s.b, from: "nil", p: &port[Out]{}}
	}
	return Stream[Out]{b: s.b, from: st.Name(), p: l.out}
}

// To ends s with the sink st.
func To[In any](s Stream[In], st *stage.Stage[In, stage.None]) {
	if link(s, st, true) != nil {
		s.b.sinks++
	}
}

// Build checks the wiring and configuration and returns the runnable pipeline. Every problem
// is reported (joined), each naming its stage and field: a missing sink, a stream consumed
// twice or never, duplicate names, capacities or concurrency below 1, a budget smaller than one
// event, a Batch without Linger that might not fill within the budget (stage.BatchConfig).
func (b *Builder) Build() (*Pipeline, error) {
	errs := append([]error(nil), b.errs...)
	errs = append(errs, b.cfg.validate()...)
	if b.built {
		errs = append(errs, fmt.Errorf("pipeline: Build called twice: %w", ErrInvalid))
	}
	if ext.CheckBuild != nil { // the Kafka package's exactly-once pairings
		stages := make([]any, len(b.nodes))
		for i, n := range b.nodes {
			stages[i] = n.public()
		}
		if err := ext.CheckBuild(b.src, stages); err != nil {
			errs = append(errs, err)
		}
	}
	if b.sinks == 0 {
		errs = append(errs, fmt.Errorf("pipeline %q: no Sink: end the pipeline with To: %w", b.cfg.name, ErrInvalid))
	}
	for _, n := range b.nodes {
		if n.dangling() {
			errs = append(errs, fmt.Errorf("pipeline: stage %q: its output is not consumed (add a stage or a Sink): %w", n.Name(), ErrInvalid))
		}
		if err := n.FitsBudget(b.cfg.budget, b.cfg.maxEventBytes); err != nil {
			errs = append(errs, fmt.Errorf("pipeline %q: %w: %w", b.cfg.name, err, ErrInvalid))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	b.built = true
	return newPipeline(b), nil
}
