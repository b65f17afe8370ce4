// Package ext gives sluice's own kit packages (pipeline/observe, ...) engine data that the
// public packages stage, pipeline and pool do not export. Package pipeline sets its function
// variables in its init, before any pipeline exists; they are never changed afterwards. Users
// never see it.
package ext

import "github.com/sluicehq/sluice/internal/flow"

// Watch turns on call tracking in every stage of p (a *pipeline.Pipeline; nil or another type
// returns nil) and returns the function that appends the calls running now to dst, in stage
// order. Tracking costs each call a clock read and a short uncontended lock; off, one atomic
// load.
var Watch func(p any) func(dst []flow.Call) []flow.Call
