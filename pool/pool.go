// Package pool holds sluice's recycling and bounded-execution primitives: a typed wrapper over
// sync.Pool with a reset hook (Pool), the detector for objects released twice (Debug,
// DoubleReleases), and a worker pool on ants whose admission is bounded (Workers).
package pool

import (
	"sync"
	"sync/atomic"
)

// Pool is a typed wrapper over sync.Pool. Get returns a zeroed-by-Reset object; Put runs the
// reset hook and recycles it. The zero value is not usable: construct with New.
//
// Ownership: an object passed to Put belongs to the pool and must not be used afterwards.
type Pool[T any] struct {
	p     sync.Pool
	reset func(*T)
}

// New returns a Pool whose objects are allocated with new(T) and cleaned by reset before they
// are recycled. reset may be nil (the object is then recycled as it is).
func New[T any](reset func(*T)) *Pool[T] {
	p := &Pool[T]{reset: reset}
	p.p.New = func() any { return new(T) }
	return p
}

// Get takes an object from the pool, allocating one when the pool is empty. It never blocks.
func (p *Pool[T]) Get() *T { return p.p.Get().(*T) }

// Put resets x and returns it to the pool. x must not be used after Put. Put(nil) is a no-op.
func (p *Pool[T]) Put(x *T) {
	if x == nil {
		return
	}
	if p.reset != nil {
		p.reset(x)
	}
	p.p.Put(x)
}

var (
	debugMode      atomic.Bool
	doubleReleases atomic.Uint64
)

// SetDebug turns the debug mode on or off (default off, or on when the binary is built with
// the `sluicedebug` build tag). In debug mode a misuse detected by ReportMisuse (a second
// Release or Ack of a pooled object, a use after Release) panics instead of only being
// counted. Tests should turn it on.
func SetDebug(on bool) { debugMode.Store(on) }

// Debug reports whether the debug mode is on.
func Debug() bool { return debugMode.Load() }

// DoubleReleases returns how many misuses (double Release/Ack, use after Release) were
// detected since the process started. A non-zero value is a bug in the code that owns the
// objects; the misused object was not recycled twice.
func DoubleReleases() uint64 { return doubleReleases.Load() }

// MisuseError describes a pooled object released or acknowledged after it was finished.
type MisuseError struct {
	What string // for example "stage.Event: second Release"
}

func (e *MisuseError) Error() string { return "sluice/pool: misuse of a pooled object: " + e.What }

// ReportMisuse records a misuse: it increments the DoubleReleases counter and, in debug mode,
// panics with a *MisuseError. Owners of pooled objects call it when they detect a second
// release; they must leave the object untouched afterwards.
func ReportMisuse(what string) {
	doubleReleases.Add(1)
	if debugMode.Load() {
		panic(&MisuseError{What: what})
	}
}
