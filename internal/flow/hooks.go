package flow

import "errors"

// Hooks are what the engine needs from package stage, which it cannot import: the public
// types it hands to users are stage's. Package stage sets every field in its init, before any
// pipeline runs; they are never changed afterwards.
var Hooks struct {
	// Life returns the Life of a *stage.Event.
	Life func(ev any) *Life
	// New returns a live event from stage's pool, as its Life (GetEvent).
	New func() *Life
	// Reset clears a retired event's fields for reuse (its Life included); the event is then
	// put in a Cache block, not back in stage's pool.
	Reset func(l *Life)
	// Failure returns a *stage.Failure of the named stage for the events behind a message.
	Failure func(stage string, err error, attempts int, ls []*Life) error
	// Detach returns a copy of a *stage.Failure without its events (they are about to be
	// recycled) whose Err is err; it keeps the record the failure names.
	Detach func(f error, err error) error
	// Panic returns a *stage.PanicError.
	Panic func(stage string, v any, stack []byte) error
	// Core returns the *Stage behind a *stage.Stage, as any.
	Core func(st any) any
}

// ErrInvalid is wrapped by every construction error of sluice (pipeline.ErrInvalid is it).
var ErrInvalid = errors.New("sluice: invalid configuration")

// ErrAborted ends messages abandoned by a hard stop: their events are not completed ok.
var ErrAborted = errors.New("sluice: abandoned by hard stop")

// errFailedLineage ends the members of a batch that failed fatally.
var errFailedLineage = errors.New("sluice: derived message failed")

// Fatal marks an error that stops the pipeline whatever the stage's error policy
// (stage.Done.Fail).
type Fatal struct{ Err error }

func (e Fatal) Error() string { return e.Err.Error() }
func (e Fatal) Unwrap() error { return e.Err }
