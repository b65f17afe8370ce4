package stage_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// runMap runs Generate(n) → the map under test → a sink, with the error handler fs.
func runMap(t *testing.T, n int64, fs *failures, m *stage.Stage[*stage.Event, int64]) (*pipeline.Pipeline, *completions, error) {
	t.Helper()
	src := offsets(n)
	done := track(src)
	b := pipeline.New(src, pipeline.WithLogger(quiet), pipeline.WithErrorHandler(fs.handle))
	pipeline.To(pipeline.Then(b.Source(), m), stage.Sink("sink", func(context.Context, int64) error { return nil }))
	p := build(t, b)
	err := p.Run(context.Background())
	if st := p.Stats(); st.InFlightBytes != 0 || st.InFlightEvents != 0 {
		t.Errorf("left in flight after Run: %d bytes, %d events", st.InFlightBytes, st.InFlightEvents)
	}
	return p, done, err
}

func TestMapPanicBecomesPanicErrorForTheHandler(t *testing.T) {
	var fs failures
	p, done, err := runMap(t, 5, &fs, stage.Map("explode", func(_ context.Context, ev *stage.Event) (int64, error) {
		if ev.Offset == 3 {
			panic("kaboom")
		}
		return ev.Offset, nil
	}))
	if err != nil {
		t.Fatalf("Run = %v, want nil (a handled panic is not fatal)", err)
	}
	got := fs.all()
	if len(got) != 1 || got[0].stage != "explode" || len(got[0].offsets) != 1 || got[0].offsets[0] != 3 {
		t.Fatalf("handler got %+v, want one failure of stage explode for offset 3", got)
	}
	var pe *stage.PanicError
	if !errors.As(got[0].err, &pe) {
		t.Fatalf("failure error %v (%T), want a *stage.PanicError", got[0].err, got[0].err)
	}
	if pe.Stage != "explode" || pe.Value != "kaboom" || !strings.Contains(pe.Error(), `stage "explode"`) {
		t.Fatalf("PanicError %+v does not name the stage and value", pe)
	}
	if !strings.Contains(string(pe.Stack), "TestMapPanicBecomesPanicErrorForTheHandler") {
		t.Fatalf("PanicError.Stack does not show the panicking function:\n%s", pe.Stack)
	}
	done.exactlyOnceOK(t, 5) // the handled event completes ok
	if st := stageStats(t, p, "explode"); st.Panics != 1 || st.Handled != 1 || st.Errors != 1 || st.In != 5 || st.Out != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRetryRetriesExactlyNTimesThenHandles(t *testing.T) {
	const retries = 3
	errFlaky := errors.New("flaky")
	var (
		mu    sync.Mutex
		calls = map[int64]int{}
	)
	var fs failures
	p, done, err := runMap(t, 4, &fs, stage.Map("flaky", func(_ context.Context, ev *stage.Event) (int64, error) {
		mu.Lock()
		calls[ev.Offset]++
		c := calls[ev.Offset]
		mu.Unlock()
		switch {
		case ev.Offset == 0: // always fails
			return 0, errFlaky
		case ev.Offset == 1 && c <= 2: // fails twice, then succeeds
			return 0, errFlaky
		}
		return ev.Offset, nil
	}, stage.WithRetry(stage.Retry{Retries: retries, Backoff: time.Microsecond, MaxBackoff: time.Millisecond})))
	if err != nil {
		t.Fatal(err)
	}
	if calls[0] != retries+1 || calls[1] != 3 || calls[2] != 1 || calls[3] != 1 {
		t.Fatalf("calls per offset %v, want [0]=%d [1]=3 [2]=1 [3]=1", calls, retries+1)
	}
	got := fs.all()
	if len(got) != 1 || got[0].attempts != retries+1 || !errors.Is(got[0].err, errFlaky) || got[0].offsets[0] != 0 {
		t.Fatalf("handler got %+v, want offset 0 after %d attempts", got, retries+1)
	}
	done.exactlyOnceOK(t, 4)
	if st := stageStats(t, p, "flaky"); st.Retries != retries+2 || st.Errors != retries+1+2 || st.Handled != 1 || st.Out != 3 {
		t.Fatalf("stats %+v, want Retries %d Errors %d Handled 1 Out 3", st, retries+2, retries+3)
	}
}

func TestFailPolicyStopsRunAndFailsTheEvent(t *testing.T) {
	errStrict := errors.New("strict")
	var fs failures
	p, done, err := runMap(t, 10, &fs, stage.Map("strict", func(_ context.Context, ev *stage.Event) (int64, error) {
		if ev.Offset == 2 {
			return 0, errStrict
		}
		return ev.Offset, nil
	}, stage.WithErrorPolicy(stage.Fail)))
	if !errors.Is(err, errStrict) {
		t.Fatalf("Run = %v, want an error wrapping the stage's error", err)
	}
	var f *stage.Failure
	if !errors.As(err, &f) || f.Stage != "strict" {
		t.Fatalf("Run error %v does not name the stage", err)
	}
	if len(fs.all()) != 0 {
		t.Fatal("the error handler was called under the Fail policy")
	}
	done.mu.Lock()
	defer done.mu.Unlock()
	if done.bad[2] != 1 || done.ok[2] != 0 {
		t.Fatalf("offset 2 completed ok %d, not ok %d times; want not ok once", done.ok[2], done.bad[2])
	}
	if st := p.Stats(); uint64(len(done.sequence)) != st.Emitted || st.Completed+st.Failed != st.Emitted {
		t.Fatalf("%d completions for %d emitted (%+v)", len(done.sequence), st.Emitted, st)
	}
}

func TestErrorHandlerErrorFailsThePipeline(t *testing.T) {
	errOrig, errDLQ := errors.New("bad record"), errors.New("dead-letter topic down")
	fs := failures{answer: errDLQ}
	_, done, err := runMap(t, 3, &fs, stage.Map("decode", func(_ context.Context, ev *stage.Event) (int64, error) {
		if ev.Offset == 1 {
			return 0, errOrig
		}
		return ev.Offset, nil
	}))
	if !errors.Is(err, errDLQ) || !errors.Is(err, errOrig) {
		t.Fatalf("Run = %v, want an error wrapping both the handler's and the stage's error", err)
	}
	done.mu.Lock()
	defer done.mu.Unlock()
	if done.bad[1] != 1 || done.ok[1] != 0 {
		t.Fatalf("offset 1 completed ok %d, not ok %d times; want not ok once", done.ok[1], done.bad[1])
	}
}

func TestTimeoutCancelsASlowAttempt(t *testing.T) {
	var (
		fs    failures
		mu    sync.Mutex
		calls int
	)
	_, done, err := runMap(t, 3, &fs, stage.Map("slow", func(ctx context.Context, ev *stage.Event) (int64, error) {
		if ev.Offset != 1 {
			return ev.Offset, nil
		}
		mu.Lock()
		calls++
		mu.Unlock()
		<-ctx.Done() // only the per-attempt timeout ends this
		return 0, ctx.Err()
	}, stage.WithTimeout(5*time.Millisecond), stage.WithRetry(stage.Retry{Retries: 1, Backoff: 0, MaxBackoff: 0})))
	if err != nil {
		t.Fatal(err)
	}
	got := fs.all()
	if len(got) != 1 || !errors.Is(got[0].err, context.DeadlineExceeded) || got[0].attempts != 2 || calls != 2 {
		t.Fatalf("handler got %+v after %d calls, want DeadlineExceeded after 2 attempts", got, calls)
	}
	done.exactlyOnceOK(t, 3)
}
