package kafka

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestSinkFlushWaitsForItsRecords: a sink's close hook returns once its last outstanding
// record's report ended its Done, and at the close deadline with an error counting what is
// still outstanding.
func TestSinkFlushWaitsForItsRecords(t *testing.T) {
	s := &sink{idle: make(chan struct{}, 1)}
	s.outstanding.Add(2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := s.flush(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "2 record(s)") {
		t.Fatalf("flush at the deadline with 2 outstanding = %v, want an error counting 2 and wrapping the deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.flush(context.Background()) }()
	s.delivered()
	select {
	case err := <-done:
		t.Fatalf("flush returned %v with a record still outstanding", err)
	case <-time.After(50 * time.Millisecond): // nothing to signal "still waiting": a short look suffices
	}
	s.delivered()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("flush did not return after the last record was delivered")
	}
}
