package stage_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/stage"
)

func TestStageConstructionErrorsNameTheField(t *testing.T) {
	id := func(_ context.Context, v int) (int, error) { return v, nil }
	cases := []struct {
		name  string
		err   error
		field []string
	}{
		{"empty name", stage.Map("", id).Err(), []string{"Name"}},
		{"Concurrency(0)", stage.Map("m", id, stage.Concurrency(0)).Err(), []string{"Concurrency"}},
		{"Capacity(0)", stage.Map("m", id, stage.Capacity(0)).Err(), []string{"Capacity"}},
		{"negative Timeout", stage.Map("m", id, stage.Timeout(-time.Second)).Err(), []string{"Timeout"}},
		{"negative Retry", stage.Map("m", id, stage.Retry(-1, 0, 0)).Err(), []string{"Retry"}},
		{"backoff above max", stage.Map("m", id, stage.Retry(2, time.Second, time.Millisecond)).Err(), []string{"Retry", "backoff"}},
		{"unknown policy", stage.Map("m", id, stage.OnError(stage.ErrorPolicy(9))).Err(), []string{"OnError"}},
		{"all problems joined", stage.Sink("s", func(context.Context, int) error { return nil }, stage.Concurrency(0), stage.Capacity(-1)).Err(), []string{"Concurrency", "Capacity"}},
		{"Batch Concurrency(2)", stage.Batch("b", stage.BatchConfig[int]{MaxCount: 2}, stage.Concurrency(2)).Err(), []string{`"b"`, "Concurrency"}},
		{"Batch without limit", stage.Batch("b", stage.BatchConfig[int]{Linger: time.Second}).Err(), []string{"MaxCount", "MaxBytes"}},
		{"Batch negative Linger", stage.Batch("b", stage.BatchConfig[int]{MaxCount: 1, Linger: -1}).Err(), []string{"Linger"}},
		{"Batch reports option errors too", stage.Batch("b", stage.BatchConfig[int]{MaxCount: -1}, stage.Capacity(0)).Err(), []string{"MaxCount", "Capacity"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !errors.Is(c.err, stage.ErrInvalid) {
				t.Fatalf("err = %v, want one wrapping stage.ErrInvalid", c.err)
			}
			for _, f := range c.field {
				if !strings.Contains(c.err.Error(), f) {
					t.Errorf("error %q does not name %s", c.err, f)
				}
			}
		})
	}
}

func TestValidStagesReportTheirShape(t *testing.T) {
	id := func(_ context.Context, v int) (int, error) { return v, nil }
	sink := func(context.Context, int) error { return nil }
	type shape interface {
		Err() error
		Kind() stage.Kind
		Tasks() int
		Terminal() bool
	}
	cases := []struct {
		name  string
		s     shape
		kind  stage.Kind
		tasks int // pool tasks: workers, plus dispatcher and collector when ordered
	}{
		{"map", stage.Map("m", id), stage.KindMap, 1},
		{"ordered map 4", stage.Map("m", id, stage.Concurrency(4)), stage.KindMap, 6},
		{"unordered map 4", stage.Map("m", id, stage.Concurrency(4), stage.Unordered()), stage.KindMap, 4},
		{"filter", stage.Filter("f", func(context.Context, int) (bool, error) { return true, nil }), stage.KindFilter, 1},
		{"flatmap 2", stage.FlatMap("fm", func(context.Context, int) ([]int, error) { return nil, nil }, stage.Concurrency(2)), stage.KindFlatMap, 4},
		{"sink 4", stage.Sink("s", sink, stage.Concurrency(4)), stage.KindSink, 4},
		{"async sink 3", stage.AsyncSink("a", func(context.Context, int, stage.Done) error { return nil }, nil, stage.Concurrency(3)), stage.KindAsyncSink, 3},
		{"batch", stage.Batch("b", stage.BatchConfig[int]{MaxBytes: 10}), stage.KindBatch, 1},
	}
	for _, c := range cases {
		terminal := c.kind == stage.KindSink || c.kind == stage.KindAsyncSink
		if c.s.Err() != nil || c.s.Kind() != c.kind || c.s.Tasks() != c.tasks || c.s.Terminal() != terminal {
			t.Errorf("%s: err %v kind %s tasks %d terminal %v; want nil %s %d %v",
				c.name, c.s.Err(), c.s.Kind(), c.s.Tasks(), c.s.Terminal(), c.kind, c.tasks, terminal)
		}
	}
	m := stage.Map("named", id, stage.Capacity(7), stage.Concurrency(3))
	if m.Name() != "named" || m.Capacity() != 7 || m.Concurrency() != 3 {
		t.Fatalf("accessors: %q %d %d", m.Name(), m.Capacity(), m.Concurrency())
	}
	if st := m.Stats(); st.QueueCap != 7 || st.QueueLen != 0 || st.Concurrency != 3 {
		t.Fatalf("stats before start: %+v", st)
	}
}

func TestErrorPolicyString(t *testing.T) {
	for p, want := range map[stage.ErrorPolicy]string{stage.Handle: "handle", stage.Fail: "fail", stage.ErrorPolicy(5): "ErrorPolicy(5)"} {
		if got := p.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(p), got, want)
		}
	}
}

func TestFailureAndPanicErrorMessages(t *testing.T) {
	base := errors.New("base")
	ev := stage.GetEvent()
	defer ev.Release()
	ev.Topic, ev.Partition, ev.Offset = "orders", 2, 41
	f := &stage.Failure{Stage: "decode", Err: base, Attempts: 1, Events: []*stage.Event{ev}}
	if got := f.Error(); got != `stage "decode": orders[2]@41: base` || !errors.Is(f, base) {
		t.Fatalf("Failure.Error() = %q", got)
	}
	f.Events = append(f.Events, ev)
	if got := f.Error(); got != `stage "decode": 2 event(s): base` {
		t.Fatalf("Failure.Error() with two events = %q", got)
	}
	pe := &stage.PanicError{Stage: "decode", Value: base, Stack: []byte("stack")}
	if !errors.Is(pe, base) || !strings.Contains(pe.Error(), `stage "decode": panic: base`) {
		t.Fatalf("PanicError %q does not wrap its error value", pe)
	}
	if (&stage.PanicError{Value: 3}).Unwrap() != nil {
		t.Fatal("PanicError.Unwrap of a non-error value is not nil")
	}
}
