package flow_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/stage"
)

// defaultCapacity is the input capacity a stage gets without stage.WithCapacity (documented
// there).
const defaultCapacity = 64

func TestEdgeCapacityEmitAndDiscard(t *testing.T) {
	if c := flow.NewEdge[int](0).Cap(); c != 1 {
		t.Fatalf("NewEdge(0).Cap() = %d, want 1", c)
	}
	var f finisher
	e := flow.NewEdge[*stage.Event](3)
	for range 3 {
		ev := emitted(&f)
		if err := flow.Emit(context.Background(), e, ev, life(ev)); err != nil {
			t.Fatal(err)
		}
	}
	if e.Len() != 3 || e.Cap() != 3 {
		t.Fatalf("Len/Cap = %d/%d, want 3/3", e.Len(), e.Cap())
	}
	ev := emitted(&f)
	if flow.TryEmit(e, ev, life(ev)) {
		t.Fatal("TryEmit succeeded on a full edge")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := flow.Emit(ctx, e, ev, life(ev)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Emit on a full edge with a done ctx = %v", err)
	}
	life(ev).Abandon() // still ours after the failed emits
	if n := e.Discard(); n != 3 {
		t.Fatalf("Discard() = %d, want 3", n)
	}
	if ok, bad := f.count(); ok != 0 || bad != 4 {
		t.Fatalf("finisher got ok=%d bad=%d, want 0/4 (discarded events are not ok)", ok, bad)
	}
	e.Close()
	if n := e.Discard(); n != 0 {
		t.Fatalf("Discard on a closed empty edge = %d", n)
	}
}

// A burst takes one slot but counts as its messages: once bursts fill the capacity neither a
// burst nor a single message fits; Discard ends every message of every burst, not ok.
func TestEdgeBurstRoomAndDiscard(t *testing.T) {
	var f finisher
	e := coreOf(stage.Sink("s", func(context.Context, *stage.Event) error { return nil }, stage.WithCapacity(2*flow.MaxBurst))).NewInput()
	if !e.TakesBursts() || e.Cap() != 2*flow.MaxBurst {
		t.Fatalf("TakesBursts %v, Cap %d; want true, %d", e.TakesBursts(), e.Cap(), 2*flow.MaxBurst)
	}
	for range 2 {
		evs, ls := begun(flow.MaxBurst, &f)
		if !flow.EmitBurst(context.Background(), e, evs, ls, 0) {
			t.Fatal("EmitBurst with a free burst slot failed")
		}
	}
	if e.Len() != 2*flow.MaxBurst {
		t.Fatalf("Len() = %d after two bursts, want %d", e.Len(), 2*flow.MaxBurst)
	}
	single := emitted(&f)
	if flow.TryEmit(e, single, life(single)) {
		t.Fatal("a single message went beyond the capacity the bursts filled")
	}
	life(single).Abandon() // still ours
	rest, ls := begun(3, &f)
	if flow.EmitBurst(context.Background(), e, rest, ls, time.Millisecond) {
		t.Fatal("EmitBurst with the capacity full succeeded")
	}
	for _, l := range ls { // still ours
		l.Abandon()
	}
	if n := e.Discard(); n != 2*flow.MaxBurst {
		t.Fatalf("Discard() = %d, want %d", n, 2*flow.MaxBurst)
	}
	if ok, bad := f.count(); ok != 0 || bad != 2*flow.MaxBurst+4 {
		t.Fatalf("finisher got ok=%d bad=%d, want 0/%d", ok, bad, 2*flow.MaxBurst+4)
	}
}

func TestSinkRunsDirectlyOnAnEnvAndStartsOnce(t *testing.T) {
	var (
		wg   sync.WaitGroup
		f    finisher
		seen []int64
	)
	env := testEnv(t, &wg)
	pub := stage.Sink("direct", func(_ context.Context, ev *stage.Event) error {
		seen = append(seen, ev.Offset) // one worker: no lock needed
		return nil
	})
	s := coreOf(pub)
	in := flow.NewEdge[*stage.Event](s.Capacity())
	if err := s.Start(env, in, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(env, in, nil); !errors.Is(err, flow.ErrInvalid) {
		t.Fatalf("second Start = %v, want ErrInvalid", err)
	}
	for i := range int64(5) {
		ev := stage.GetEvent()
		ev.Offset = i
		life(ev).Begin("", 0, i, 0, 1, &f)
		if err := flow.Emit(context.Background(), in, ev, life(ev)); err != nil {
			t.Fatal(err)
		}
	}
	in.Close()
	wg.Wait()
	if ok, bad := f.count(); ok != 5 || bad != 0 {
		t.Fatalf("finisher got ok=%d bad=%d, want 5/0", ok, bad)
	}
	if len(seen) != 5 || seen[0] != 0 || seen[4] != 4 {
		t.Fatalf("sink saw %v", seen)
	}
	st := pub.Stats()
	if st.Name != "direct" || st.Kind != stage.KindSink || st.In != 5 || st.Out != 5 || st.QueueLen != 0 || st.QueueCap != defaultCapacity {
		t.Fatalf("stats %+v", st)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close of a sink without a close hook = %v", err)
	}
}
