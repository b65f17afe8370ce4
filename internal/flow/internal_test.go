package flow

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pool"
)

func TestBackoffDoublesUpToMax(t *testing.T) {
	c := Config{Retries: 5, Backoff: 10 * time.Millisecond, MaxBackoff: 35 * time.Millisecond}
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 35 * time.Millisecond, 35 * time.Millisecond, 35 * time.Millisecond}
	for i, w := range want {
		if got := c.backoffFor(i + 1); got != w {
			t.Errorf("backoffFor(%d) = %v, want %v", i+1, got, w)
		}
	}
	c = Config{Retries: 3}
	if got := c.backoffFor(3); got != 0 {
		t.Errorf("zero backoff: backoffFor(3) = %v", got)
	}
}

// recordFinish records completions. It does not release: the test's events are never pooled.
type recordFinish struct{ oks []bool }

func (r *recordFinish) Finish(_ *Life, ok bool) { r.oks = append(r.oks, ok) }

// A completion that arrives after the event was recycled must change nothing about the next
// record that reuses the object, not even its failed flag.
func TestStaleFailedCompletionDoesNotTaintTheNextRecord(t *testing.T) {
	was := pool.Debug()
	pool.SetDebug(false)
	defer pool.SetDebug(was)
	var fin recordFinish
	l := &Life{} // outside any pool, so the test can recycle it by hand
	l.state.Store(liveBit)
	l.Begin("", 0, 0, 0, 1, &fin)
	stale := l.gen()
	l.done(stale, nil)
	// Recycle it as Release and GetEvent would: next generation, live again.
	l.state.Store((uint64(stale)+1)<<genShift | liveBit)
	l.Begin("", 0, 0, 0, 1, &fin)
	before := pool.DoubleReleases()
	l.done(stale, errors.New("late failure of the previous record"))
	if pool.DoubleReleases() != before+1 {
		t.Fatal("the stale completion was not reported as a misuse")
	}
	l.done(l.gen(), nil)
	if len(fin.oks) != 2 || !fin.oks[0] || !fin.oks[1] {
		t.Fatalf("completions %v, want [true true]: a stale completion marked the next record failed", fin.oks)
	}
}

// A sender waiting for room on an edge that takes bursts is woken when the reader takes a
// parcel: the test waits until the sender counts itself as waiting, so the wake-up is what
// lets it through (not room it found on arrival).
func TestEdgeBurstSenderWokenByReader(t *testing.T) {
	e := newBurstEdge[int](MaxBurst)
	full := func() *[]msg[int] {
		r := e.getBurst()
		*r = append(*r, make([]msg[int], MaxBurst)...)
		return r
	}
	if !e.put(context.Background(), parcel[int]{burst: full()}, MaxBurst, 0) {
		t.Fatal("a burst did not fit an empty edge")
	}
	if e.put(context.Background(), parcel[int]{burst: full()}, MaxBurst, 0) {
		t.Fatal("a second burst fit an edge whose capacity the first one fills")
	}
	done := make(chan bool)
	go func() { done <- e.put(context.Background(), parcel[int]{burst: full()}, MaxBurst, time.Minute) }()
	for e.waiting.Load() == 0 { // no signal for "is waiting": poll the counter
		runtime.Gosched()
	}
	if n := e.each(<-e.ch, func(msg[int]) {}); n != MaxBurst {
		t.Fatalf("took a parcel of %d messages, want %d", n, MaxBurst)
	}
	if !<-done {
		t.Fatal("the waiting sender was not woken when the reader took a parcel")
	}
	if e.Len() != MaxBurst {
		t.Fatalf("Len() = %d after the woken burst, want %d", e.Len(), MaxBurst)
	}
}
