package flow

import "context"

// The constructors below are package stage's: name and cfg are validated there, and err is
// the construction error Build reports.

// NewMap returns a stage that calls fn once per message and emits its result.
func NewMap[In, Out any](name string, cfg Config, err error, fn func(context.Context, In) (Out, error)) *Stage[In, Out] {
	s := newStage[In, Out](name, KindMap, cfg, err)
	one := func(ctx context.Context, in In) (Out, bool, error) {
		out, err := fn(ctx, in)
		return out, true, err
	}
	s.start = func(s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out]) error {
		return startWorkers(s, env, in, out, oneHandler(s, one))
	}
	return s
}

// NewFilter returns a stage that passes on the messages keep accepts.
func NewFilter[T any](name string, cfg Config, err error, keep func(context.Context, T) (bool, error)) *Stage[T, T] {
	s := newStage[T, T](name, KindFilter, cfg, err)
	one := func(ctx context.Context, in T) (T, bool, error) {
		ok, err := keep(ctx, in)
		return in, ok, err
	}
	s.start = func(s *Stage[T, T], env *Env, in *Edge[T], out *Edge[T]) error {
		return startWorkers(s, env, in, out, oneHandler(s, one))
	}
	return s
}

// NewFlatMap returns a stage that emits every output of fn (none: the input is finished).
func NewFlatMap[In, Out any](name string, cfg Config, err error, fn func(context.Context, In) ([]Out, error)) *Stage[In, Out] {
	s := newStage[In, Out](name, KindFlatMap, cfg, err)
	s.start = func(s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out]) error {
		return startWorkers(s, env, in, out, manyHandler(s, fn))
	}
	return s
}

// NewSink returns a terminal stage calling fn once per message. Out is the caller's "none".
func NewSink[In, Out any](name string, cfg Config, err error, fn func(context.Context, In) error) *Stage[In, Out] {
	s := newStage[In, Out](name, KindSink, cfg, err)
	s.cfg.Unordered = true
	s.start = func(s *Stage[In, Out], env *Env, in *Edge[In], _ *Edge[Out]) error {
		return startWorkers(s, env, in, nil, sinkHandler(s, fn))
	}
	return s
}

// NewAsyncSink returns a terminal stage whose fn takes ownership of the message by returning
// nil, and ends it later through t.End(gen, ...) (stage.Done).
func NewAsyncSink[In, Out any](name string, cfg Config, err error, fn func(ctx context.Context, in In, t *Ticket, gen uint64) error) *Stage[In, Out] {
	s := newStage[In, Out](name, KindAsyncSink, cfg, err)
	s.cfg.Unordered = true
	s.start = func(s *Stage[In, Out], env *Env, in *Edge[In], _ *Edge[Out]) error {
		return startWorkers(s, env, in, nil, asyncHandler(s, env, fn))
	}
	return s
}
