package flow

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/sluicehq/sluice/internal/clock"
)

// Call is a stage call running now, as RunningCalls reports it (for stall detection).
type Call struct {
	Stage     string
	Start     int64  // clock.Nanotime when the attempt began
	Origin    Origin // the first source event behind the message
	Events    int64  // source events behind the message (a batch's count)
	Goroutine int64  // id of the goroutine running the call (as in a goroutine dump)
}

// callSlot is one stage worker's current call, written by the worker (or, with a call pool,
// by the pool goroutine running its call; never both at once) and read by RunningCalls.
// The worker writes origin, events and gid under mu at the start of each call; start is
// atomic so the end of a call costs one store. A reader that sees start != 0 under mu reads
// the fields of that same call.
type callSlot struct {
	start  atomic.Int64 // clock.Nanotime at the attempt's start; 0 while idle
	mu     sync.Mutex   // guards the fields below
	gid    int64
	origin Origin
	events int64
}

// watch is a stage's call tracking, off until Watch: then every attempt records its start,
// its message's origin and its goroutine in the worker's slot. Off, it costs one atomic load
// per call.
type watch struct {
	on    atomic.Bool
	mu    sync.Mutex // guards slots
	slots []*callSlot
}

// Watch turns on call tracking (RunningCalls); it stays on. Safe to call at any time.
func (s *Stage[In, Out]) Watch() { s.w.on.Store(true) }

// RunningCalls appends the stage's calls running now (tracked since Watch) to dst.
func (s *Stage[In, Out]) RunningCalls(dst []Call) []Call {
	s.w.mu.Lock()
	slots := s.w.slots
	s.w.mu.Unlock()
	for _, sl := range slots {
		sl.mu.Lock()
		if st := sl.start.Load(); st != 0 {
			dst = append(dst, Call{Stage: s.name, Start: st, Origin: sl.origin, Events: sl.events, Goroutine: sl.gid})
		}
		sl.mu.Unlock()
	}
	return dst
}

// track records the start of an attempt on m's message in w's slot and returns the slot, whose
// start the attempt clears when it ends. start is the attempt's clock reading, 0 if it took
// none. The goroutine id is parsed once per worker goroutine, or per call with a call pool
// (pooled), whose goroutines vary from call to call.
func (s *Stage[In, Out]) track(w *worker, pooled bool, r ref, start int64) *callSlot {
	sl := w.slot
	var gid int64
	if sl == nil || pooled {
		gid = GoroutineID()
	}
	if sl == nil {
		sl = &callSlot{}
		s.w.mu.Lock()
		s.w.slots = append(s.w.slots, sl)
		s.w.mu.Unlock()
		w.slot = sl
	}
	if start == 0 {
		start = clock.Nanotime()
	}
	l := r.first()
	sl.mu.Lock()
	if gid != 0 {
		sl.gid = gid
	}
	if l != nil {
		sl.origin.Topic, sl.origin.Partition, sl.origin.Offset, sl.origin.Tag = l.origin.Topic, l.origin.Partition, l.origin.Offset, l.origin.Tag
	} else {
		sl.origin = Origin{}
	}
	sl.events = r.weight()
	sl.start.Store(start)
	sl.mu.Unlock()
	return sl
}

// first returns the first source event behind the reference (nil for an empty group).
func (r ref) first() *Life {
	for r.l == nil {
		if r.grp == nil || len(r.grp.members) == 0 {
			return nil
		}
		r = r.grp.members[0]
	}
	return r.l
}

// GoroutineID returns the id of the calling goroutine, as a goroutine dump prints it (0 if
// it cannot be parsed). It costs a short stack trace: call it rarely.
func GoroutineID() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	const prefix = "goroutine "
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return 0
	}
	var id int64
	for _, c := range b[len(prefix):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + int64(c-'0')
	}
	return id
}
