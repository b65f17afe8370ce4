package flow_test

import (
	"testing"

	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// The lifecycle of a pooled stage.Event in the engine (flow.Life): Begin, then exactly one
// finish (Complete, Abandon, or the last derived message), or Unbegin.

func TestEventCompleteFinishesOnceAndReleases(t *testing.T) {
	var f finisher
	ev := stage.GetEvent()
	if len(ev.Key) != 0 || len(ev.Value) != 0 || len(ev.Headers) != 0 || life(ev).Size() != 0 {
		t.Fatalf("GetEvent returned a dirty event: %+v", ev)
	}
	ev.Value = append(ev.Value, "abc"...)
	life(ev).Begin("", 0, 0, 0, 3, &f)
	if life(ev).Size() != 3 {
		t.Fatalf("Size() = %d after Begin(3)", life(ev).Size())
	}
	life(ev).Complete()
	if ok, bad := f.count(); ok != 1 || bad != 0 {
		t.Fatalf("finisher got ok=%d bad=%d, want 1/0", ok, bad)
	}
}

func TestEventAbandonFinishesNotOK(t *testing.T) {
	var f finisher
	life(emitted(&f)).Abandon()
	if ok, bad := f.count(); ok != 0 || bad != 1 {
		t.Fatalf("finisher got ok=%d bad=%d, want 0/1", ok, bad)
	}
}

func TestEventUnbeginReturnsOwnership(t *testing.T) {
	setDebug(t, true) // any misuse below panics
	var f finisher
	ev := stage.GetEvent()
	life(ev).Begin("", 0, 0, 0, 9, &f)
	life(ev).Unbegin()
	if life(ev).Size() != 0 {
		t.Fatalf("Size() = %d after Unbegin", life(ev).Size())
	}
	ev.Release() // the caller owns it again: no misuse
	if ok, bad := f.count(); ok+bad != 0 {
		t.Fatal("Unbegin finished the event")
	}
}

func TestEventReleaseWhileInFlightIsDetectedAndIgnored(t *testing.T) {
	setDebug(t, false)
	var f finisher
	before := pool.DoubleReleases()
	ev := emitted(&f)
	ev.Release() // misuse: the event is in flight
	if got := pool.DoubleReleases() - before; got != 1 {
		t.Fatalf("DoubleReleases grew by %d, want 1", got)
	}
	life(ev).Complete() // the event was left alone: it still finishes normally
	if ok, _ := f.count(); ok != 1 {
		t.Fatal("event did not finish after the ignored Release")
	}
	if got := pool.DoubleReleases() - before; got != 1 {
		t.Fatalf("DoubleReleases grew by %d, want 1", got)
	}
}

func TestEventCompletedTwiceIsDetected(t *testing.T) {
	setDebug(t, true)
	var f finisher
	ev := emitted(&f)
	life(ev).Complete()
	mustPanicMisuse(t, life(ev).Complete)
	if ok, bad := f.count(); ok != 1 || bad != 0 {
		t.Fatalf("finisher got ok=%d bad=%d, want exactly one ok", ok, bad)
	}
}
