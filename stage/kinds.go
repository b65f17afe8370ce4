package stage

import "context"

// Map returns a 1→1 stage: each input becomes fn's output.
func Map[In, Out any](name string, fn func(ctx context.Context, in In) (Out, error), opts ...Option) *Stage[In, Out] {
	s := newStage[In, Out](name, KindMap, opts)
	one := func(ctx context.Context, in In) (Out, bool, error) {
		out, err := fn(ctx, in)
		return out, true, err
	}
	s.start = func(s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out]) error {
		return startWorkers(s, env, in, out, oneHandler(s, one))
	}
	return s
}

// Filter returns a stage that passes on the inputs for which keep returns true. A dropped
// input is finished (its event completes, and is committed, as processed).
func Filter[T any](name string, keep func(ctx context.Context, in T) (bool, error), opts ...Option) *Stage[T, T] {
	s := newStage[T, T](name, KindFilter, opts)
	one := func(ctx context.Context, in T) (T, bool, error) {
		ok, err := keep(ctx, in)
		return in, ok, err
	}
	s.start = func(s *Stage[T, T], env *Env, in *Edge[T], out *Edge[T]) error {
		return startWorkers(s, env, in, out, oneHandler(s, one))
	}
	return s
}

// FlatMap returns a 1→N stage: each input becomes the elements of fn's result, emitted in
// order once fn succeeded (a retry never emits twice). An empty result finishes the input.
// The input's event completes when all N outputs have completed.
func FlatMap[In, Out any](name string, fn func(ctx context.Context, in In) ([]Out, error), opts ...Option) *Stage[In, Out] {
	s := newStage[In, Out](name, KindFlatMap, opts)
	s.start = func(s *Stage[In, Out], env *Env, in *Edge[In], out *Edge[Out]) error {
		return startWorkers(s, env, in, out, manyHandler(s, fn))
	}
	return s
}

// Sink returns a terminal stage: fn consumes each input; its success finishes the input.
// Sinks run Concurrency workers and are always unordered.
func Sink[In any](name string, fn func(ctx context.Context, in In) error, opts ...Option) *Stage[In, None] {
	s := newStage[In, None](name, KindSink, opts)
	s.cfg.unordered = true
	s.start = func(s *Stage[In, None], env *Env, in *Edge[In], _ *Edge[None]) error {
		return startWorkers(s, env, in, nil, sinkHandler(s, fn))
	}
	return s
}

// Done finishes one message of an AsyncSink. It is a small value: copy it freely, but call
// exactly one of Ack, Nack, Abandon or Fail, once. A second call is detected
// (pool.DoubleReleases, a panic in debug mode) and ignored.
type Done struct {
	t   *ticket
	gen uint64
	fin func(t *ticket, gen uint64, err error)
}

// Ack finishes the message successfully.
func (d Done) Ack() { d.fin(d.t, d.gen, nil) }

// Nack finishes the message with err, which goes through the stage's error policy (no
// retries: an async sink retries on its own, as librdkafka does). It never blocks: the policy
// (the error handler, a dead-letter producer for instance) runs later on the pipeline's
// error-handling goroutine (Env.Later), so Nack may be called from any goroutine, including
// one the handler waits on (a producer's delivery-report reader). The message's events stay
// in flight, not committed, until the handler returned. Wrap stage.ErrNotDelivered into err
// when the sink's output was not written.
func (d Done) Nack(err error) {
	if err == nil {
		err = errNackNil
	}
	d.fin(d.t, d.gen, err)
}

// Abandon finishes the message as not done, without the error handler: its events are not
// committed and will be consumed again (for a send that was purged at shutdown).
func (d Done) Abandon() { d.fin(d.t, d.gen, errAborted) }

// Fail finishes the message as not done and stops the pipeline with err, whatever the stage's
// error policy: for a failure that no retry, dead letter or skip may paper over (a producer
// that librdkafka declared fatal fails every later record too; skipping them would commit
// records that were never written). The events are not committed and are consumed again after
// a restart.
func (d Done) Fail(err error) {
	if err == nil {
		err = errNackNil
	}
	d.fin(d.t, d.gen, fatalError{err})
}

// fatalError marks an error given to Done.Fail.
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

// AsyncSink returns a terminal stage whose fn hands each input to something that finishes
// later (a producer awaiting its delivery report) and calls done.Ack or done.Nack then. If fn
// returns an error it has not taken ownership: the error policy applies (with retries) and
// done must not be used. closeFn (may be nil) runs after the workers exited, once, at
// shutdown: it must flush and end every outstanding Done before returning.
func AsyncSink[In any](name string, fn func(ctx context.Context, in In, done Done) error, closeFn func(ctx context.Context) error, opts ...Option) *Stage[In, None] {
	s := newStage[In, None](name, KindAsyncSink, opts)
	s.cfg.unordered = true
	s.closeFn = closeFn
	s.start = func(s *Stage[In, None], env *Env, in *Edge[In], _ *Edge[None]) error {
		return startWorkers(s, env, in, nil, asyncHandler(s, env, fn))
	}
	return s
}
