// Package ext holds the hooks through which the kit's optional packages (kafka/kotel) reach
// the engine without new exports in stage, pipeline or pool: function variables that package
// pipeline sets in its init, and values carried by a stage call's context. Users never see it.
package ext

import (
	"context"
	"sync/atomic"

	"github.com/sluicehq/sluice/internal/flow"
)

// WithTracer returns a pipeline.Option (as any: this package cannot import pipeline) that
// makes t the pipeline's flow.Env.Tracer. Set by package pipeline's init, never changed.
var WithTracer func(t flow.Tracer) any

// Injector writes the trace context of ctx (a traced stage call's) as key/value pairs through
// set: what a producer puts in an output record's headers.
type Injector func(ctx context.Context, set func(key, value string))

type injectorKey struct{}

// injecting is set once any context carried an Injector: until then InjectorOf does not look
// into contexts at all, so a process that never traces pays one atomic load per record.
var injecting atomic.Bool

// WithInjector returns ctx carrying inj, for the producers called with it (a Tracer's Call
// sets it on the context the stage's function gets).
func WithInjector(ctx context.Context, inj Injector) context.Context {
	if !injecting.Load() {
		injecting.Store(true)
	}
	return context.WithValue(ctx, injectorKey{}, inj)
}

// InjectorOf returns the Injector ctx carries, or nil (the call is not traced).
func InjectorOf(ctx context.Context) Injector {
	if !injecting.Load() {
		return nil
	}
	inj, _ := ctx.Value(injectorKey{}).(Injector)
	return inj
}
