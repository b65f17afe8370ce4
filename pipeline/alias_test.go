package pipeline_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/pool"
	"github.com/sluicehq/sluice/stage"
)

// A stage that keeps an event's bytes beyond its call breaks the ownership rule (README, "Who
// owns what"). In debug mode (and under -race) the recycled bytes are overwritten, so the
// mistake shows in tests: what the stage kept reads as 0xDB, not as the record it saw. A stage
// that copies keeps the record.
func TestKeptEventBytesArePoisonedWhenRecycled(t *testing.T) {
	setDebug(t, true)
	values := [][]byte{[]byte("alpha"), []byte("beta"), []byte("gamma")}
	var kept, copied [][]byte // one worker: no lock needed
	b := pipeline.New(pipeline.FromSlice(values), pipeline.WithLogger(quiet))
	pipeline.To(b.Source(), stage.Sink("keep", func(_ context.Context, ev *stage.Event) error {
		kept = append(kept, ev.Value)                  // wrong: aliases the event's buffer
		copied = append(copied, bytes.Clone(ev.Value)) // right
		return nil
	}))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range values {
		if !bytes.Equal(copied[i], values[i]) {
			t.Errorf("copy %d = %q, want %q", i, copied[i], values[i])
		}
		if want := bytes.Repeat([]byte{0xDB}, len(kept[i])); !bytes.Equal(kept[i], want) {
			t.Errorf("kept bytes %d = %q after recycling, want them poisoned", i, kept[i])
		}
	}
}

// Generate's fill may point an event at the caller's own bytes (a shared payload): those are
// the caller's, not the event's, and are never poisoned or reused.
func TestGenerateBorrowedBytesAreNotPoisoned(t *testing.T) {
	setDebug(t, true)
	payload := []byte("shared payload")
	src := pipeline.Generate(50, func(_ int64, ev *stage.Event) { ev.Value = payload })
	b := pipeline.New(src, pipeline.WithLogger(quiet))
	pipeline.To(b.Source(), stage.Sink("s", func(context.Context, *stage.Event) error { return nil }, stage.WithConcurrency(4)))
	if err := build(t, b).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if string(payload) != "shared payload" {
		t.Fatalf("the caller's payload became %q", payload)
	}
}

func setDebug(t *testing.T, on bool) {
	t.Helper()
	was := pool.Debug()
	pool.SetDebug(on)
	t.Cleanup(func() { pool.SetDebug(was) })
}
