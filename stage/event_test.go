package stage_test

import (
	"context"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// originSource emits one event with the given fields and records its completions and the
// event's Origin when it completes (a source completes and commits by Origin).
type originSource struct {
	fields stage.Origin
	key    []byte

	mu      sync.Mutex
	oks     []bool
	origins []stage.Origin
}

func (s *originSource) Run(ctx context.Context, emit *pipeline.Emitter) error {
	ev := stage.GetEvent()
	ev.Topic, ev.Partition, ev.Offset, ev.SourceTag = s.fields.Topic, s.fields.Partition, s.fields.Offset, s.fields.Tag
	ev.Key = append(ev.Key, s.key...)
	_ = emit.Emit(ctx, ev) // an error means ctx is done: the test sees no completion
	return nil
}

func (s *originSource) Complete(ev *stage.Event, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oks = append(s.oks, ok)
	s.origins = append(s.origins, ev.Origin())
}

// TestEventOriginFixedAtEmission: emission fixes the event's Origin from its fields; a stage
// changing them afterwards does not move it (neither for later stages nor for the source's
// completion); a recycled event starts with none.
func TestEventOriginFixedAtEmission(t *testing.T) {
	ev := stage.GetEvent()
	if ev.Origin() != (stage.Origin{}) {
		t.Fatalf("Origin before emission = %+v", ev.Origin())
	}
	ev.Release()
	want := stage.Origin{Topic: "in", Partition: 3, Offset: 42, Tag: 7}
	src := &originSource{fields: want, key: []byte("k")}
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	var (
		seen  *stage.Event // the sink has one worker; read after Run
		atEnd stage.Origin
	)
	changed := pipeline.Then(b.Source(), stage.Map("change", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
		ev.Topic, ev.Partition, ev.Offset, ev.SourceTag, ev.Key = "other", 9, 1, 8, nil
		return ev, nil
	}))
	pipeline.To(changed, stage.Sink("check", func(_ context.Context, ev *stage.Event) error {
		seen, atEnd = ev, ev.Origin()
		return nil
	}))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if atEnd != want {
		t.Fatalf("Origin = %+v after a stage changed the fields, want %+v", atEnd, want)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.oks) != 1 || !src.oks[0] {
		t.Fatalf("completions %v, want one ok", src.oks)
	}
	if src.origins[0] != want {
		t.Fatalf("Origin at completion = %+v, want %+v", src.origins[0], want)
	}
	// Run returned: the event finished and was recycled.
	if seen.Origin() != (stage.Origin{}) {
		t.Fatalf("a recycled event kept its Origin: %+v", seen.Origin())
	}
	ev = stage.GetEvent()
	defer ev.Release()
	if ev.Origin() != (stage.Origin{}) {
		t.Fatalf("a pooled event has an Origin: %+v", ev.Origin())
	}
}

func TestEventDoubleReleaseIsCounted(t *testing.T) {
	setDebug(t, false)
	before := pool.DoubleReleases()
	ev := stage.GetEvent()
	ev.Release()
	ev.Release()
	if got := pool.DoubleReleases() - before; got != 1 {
		t.Fatalf("DoubleReleases grew by %d after a double Release, want 1", got)
	}
}

func TestEventDoubleReleasePanicsInDebug(t *testing.T) {
	setDebug(t, true)
	before := pool.DoubleReleases()
	ev := stage.GetEvent()
	ev.Release()
	mustPanicMisuse(t, ev.Release)
	if got := pool.DoubleReleases() - before; got != 1 {
		t.Fatalf("DoubleReleases grew by %d, want 1", got)
	}
}
