package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// funcSource is a Source made of functions.
type funcSource struct {
	run      func(ctx context.Context, emit *pipeline.Emitter) error
	mu       sync.Mutex
	complete map[int64]bool
}

func (s *funcSource) Run(ctx context.Context, emit *pipeline.Emitter) error { return s.run(ctx, emit) }

func (s *funcSource) Complete(ev *stage.Event, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.complete == nil {
		s.complete = map[int64]bool{}
	}
	if _, dup := s.complete[ev.Offset]; dup {
		panic("completed twice")
	}
	s.complete[ev.Offset] = ok
}

func newEvent(off int64, value string) *stage.Event {
	ev := stage.GetEvent()
	ev.Offset = off
	ev.Value = append(ev.Value[:0], value...)
	return ev
}

// TryEmit never blocks: false when the first edge is full, and the caller keeps the event.
func TestTryEmitReturnsFalseWhenFullAndCallerKeepsTheEvent(t *testing.T) {
	g := newGate()
	var p *pipeline.Pipeline // set before Run
	src := &funcSource{run: func(ctx context.Context, emit *pipeline.Emitter) error {
		if !emit.TryEmit(ctx, newEvent(0, "a")) {
			t.Error("TryEmit on an empty pipeline = false")
		}
		<-g.entered // the sink holds event 0; its input edge (capacity 1) is empty
		if !emit.TryEmit(ctx, newEvent(1, "b")) {
			t.Error("TryEmit with room on the edge = false")
		}
		kept := newEvent(2, "c")
		for range 3 {
			if emit.TryEmit(ctx, kept) {
				t.Error("TryEmit on a full edge = true")
			}
		}
		if got := p.Stats().InFlightBytes; got != 2 {
			t.Errorf("budget holds %d bytes after the refused TryEmit, want 2", got)
		}
		kept.Value = append(kept.Value, 'c') // still ours: we may change it
		g.open()
		return emit.Emit(ctx, kept) // and emit it later
	}}
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithSize(payloadSize))
	pipeline.To(b.Source(), stage.Sink("s", func(ctx context.Context, ev *stage.Event) error {
		return g.pass(ctx, ev.Offset)
	}, stage.WithCapacity(1)))
	p = build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(src.complete) != 3 || !src.complete[0] || !src.complete[1] || !src.complete[2] {
		t.Fatalf("completions %v, want offsets 0-2 ok", src.complete)
	}
	if st := p.Stats(); st.Emitted != 3 || st.Completed != 3 || st.HighWaterBytes > 4 || st.InFlightBytes != 0 {
		t.Fatalf("stats %+v: a refused TryEmit must not count", st)
	}
}

func TestTryEmitReturnsFalseWhenTheBudgetIsFull(t *testing.T) {
	g := newGate()
	src := &funcSource{run: func(ctx context.Context, emit *pipeline.Emitter) error {
		for i := range int64(3) {
			if !emit.TryEmit(ctx, newEvent(i, "12345")) {
				t.Errorf("TryEmit %d = false with room in the budget", i)
			}
		}
		last := newEvent(3, "12345")
		if emit.TryEmit(ctx, last) {
			t.Error("TryEmit beyond the budget = true")
		}
		last.Release() // refused: ours to release
		g.open()       // only now may events complete and free the budget
		return nil
	}}
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithSize(payloadSize), pipeline.WithBudget(15), pipeline.WithMaxEventBytes(5))
	pipeline.To(b.Source(), stage.Sink("s", func(ctx context.Context, ev *stage.Event) error { return g.pass(ctx, ev.Offset) }))
	p := build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(src.complete) != 3 {
		t.Fatalf("completions %v, want offsets 0-2", src.complete)
	}
}

func TestOversizedEventGoesToTheErrorHandler(t *testing.T) {
	var failures []error
	src := pipeline.FromSlice([][]byte{[]byte("ok"), make([]byte, 500), []byte("ok")})
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithSize(payloadSize), pipeline.WithBudget(100), pipeline.WithMaxEventBytes(100),
		pipeline.WithErrorHandler(func(_ context.Context, f *stage.Failure) error {
			if len(f.Events) != 1 || f.Events[0].Offset != 1 || f.Stage != "source" {
				t.Errorf("failure %v", f)
			}
			failures = append(failures, f.Err) // called from the error-handling goroutine only
			return nil
		}))
	var got pipeline.Collector[int]
	pipeline.To(pipeline.Then(b.Source(), stage.Map("len", func(_ context.Context, ev *stage.Event) (int, error) {
		return len(ev.Value), nil
	})), got.Sink("sink"))
	p := build(t, b)
	if err := p.Run(context.Background()); err != nil {
		t.Fatalf("Run = %v, want nil (the handler took the oversized event)", err)
	}
	if len(failures) != 1 || !errors.Is(failures[0], pipeline.ErrTooLarge) {
		t.Fatalf("handler got %v, want one ErrTooLarge", failures)
	}
	done.allOKOnce(t, 3)
	if items := got.Items(); len(items) != 2 {
		t.Fatalf("the stages got %v; the oversized event must skip them", items)
	}
	if st := p.Stats(); st.TooLarge != 1 || st.Emitted != 3 || st.Completed != 3 || st.InFlightBytes != 0 || st.HighWaterBytes > 100 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOversizedEventHandlerErrorFailsRun(t *testing.T) {
	errDLQ := errors.New("dead-letter refused")
	src := pipeline.FromSlice([][]byte{make([]byte, 11)})
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithSize(payloadSize), pipeline.WithBudget(10), pipeline.WithMaxEventBytes(10),
		pipeline.WithErrorHandler(func(context.Context, *stage.Failure) error { return errDLQ }))
	pipeline.To(b.Source(), stage.Sink("s", func(context.Context, *stage.Event) error { return nil }))
	if err := build(t, b).Run(context.Background()); !errors.Is(err, errDLQ) {
		t.Fatalf("Run = %v, want the handler's error", err)
	}
	done.mu.Lock()
	defer done.mu.Unlock()
	if done.bad[0] != 1 || done.ok[0] != 0 {
		t.Fatalf("oversized event completed ok %d, not ok %d times; want not ok once", done.ok[0], done.bad[0])
	}
}

func TestSourceErrorFailsRun(t *testing.T) {
	errBroker := errors.New("broker unreachable")
	src := &funcSource{run: func(ctx context.Context, emit *pipeline.Emitter) error {
		if err := emit.Emit(ctx, newEvent(0, "x")); err != nil {
			return err
		}
		return errBroker
	}}
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithName("orders"))
	pipeline.To(b.Source(), stage.Sink("s", func(context.Context, *stage.Event) error { return nil }))
	err := build(t, b).Run(context.Background())
	if !errors.Is(err, errBroker) || !strings.Contains(err.Error(), `"orders"`) {
		t.Fatalf("Run = %v, want the source's error naming the pipeline", err)
	}
	if len(src.complete) != 1 {
		t.Fatalf("completions %v, want the one emitted event completed", src.complete)
	}
}
