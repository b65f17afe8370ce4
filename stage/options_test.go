package stage_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// buildErr links st after a stage that turns events into ints (and a sink after st unless it
// is one) and returns Build's error: stage option errors surface there.
func buildErr[Out any](st *stage.Stage[int, Out]) error {
	b := pipeline.New(pipeline.FromSlice(nil))
	ints := pipeline.Then(b.Source(), stage.Map("ints", func(_ context.Context, ev *stage.Event) (int, error) { return int(ev.Offset), nil }))
	if sink, ok := any(st).(*stage.Stage[int, stage.None]); ok {
		pipeline.To(ints, sink)
	} else {
		pipeline.To(pipeline.Then(ints, st), stage.Sink("end", func(context.Context, Out) error { return nil }))
	}
	_, err := b.Build()
	return err
}

func TestStageConstructionErrorsNameTheField(t *testing.T) {
	id := func(_ context.Context, v int) (int, error) { return v, nil }
	cases := []struct {
		name  string
		err   error
		field []string
	}{
		{"empty name", buildErr(stage.Map("", id)), []string{"name"}},
		{"Concurrency(0)", buildErr(stage.Map("m", id, stage.WithConcurrency(0))), []string{"WithConcurrency"}},
		{"Capacity(0)", buildErr(stage.Map("m", id, stage.WithCapacity(0))), []string{"WithCapacity"}},
		{"negative Timeout", buildErr(stage.Map("m", id, stage.WithTimeout(-time.Second))), []string{"WithTimeout"}},
		{"negative Retry", buildErr(stage.Map("m", id, stage.WithRetry(stage.Retry{Retries: -1}))), []string{"Retry.Retries"}},
		{"backoff above max", buildErr(stage.Map("m", id, stage.WithRetry(stage.Retry{Retries: 2, Backoff: time.Second, MaxBackoff: time.Millisecond}))), []string{"Retry.Backoff", "MaxBackoff"}},
		{"unknown policy", buildErr(stage.Map("m", id, stage.WithErrorPolicy(stage.ErrorPolicy(9)))), []string{"WithErrorPolicy"}},
		{"close hook on a map", buildErr(stage.Map("m", id, stage.WithClose(func(context.Context) error { return nil }))), []string{"WithClose"}},
		{"all problems joined", buildErr(stage.Sink("s", func(context.Context, int) error { return nil }, stage.WithConcurrency(0), stage.WithCapacity(-1))), []string{"WithConcurrency", "WithCapacity"}},
		{"Batch Concurrency(2)", buildErr(stage.Batch("b", stage.BatchConfig[int]{MaxCount: 2}, stage.WithConcurrency(2))), []string{`"b"`, "WithConcurrency"}},
		{"Batch without limit", buildErr(stage.Batch("b", stage.BatchConfig[int]{Linger: time.Second})), []string{"MaxCount", "MaxBytes"}},
		{"Batch negative Linger", buildErr(stage.Batch("b", stage.BatchConfig[int]{MaxCount: 1, Linger: -1})), []string{"Linger"}},
		{"Batch reports option errors too", buildErr(stage.Batch("b", stage.BatchConfig[int]{MaxCount: -1}, stage.WithCapacity(0))), []string{"MaxCount", "WithCapacity"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !errors.Is(c.err, pipeline.ErrInvalid) {
				t.Fatalf("err = %v, want one wrapping pipeline.ErrInvalid", c.err)
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
	type shape interface{ Stats() stage.Stats }
	cases := []struct {
		name        string
		s           shape
		err         error
		kind        stage.Kind
		concurrency int
	}{
		{"map", nil, nil, stage.KindMap, 1},
		{"ordered map 4", nil, nil, stage.KindMap, 4},
		{"filter", nil, nil, stage.KindFilter, 1},
		{"flatmap 2", nil, nil, stage.KindFlatMap, 2},
		{"sink 4", nil, nil, stage.KindSink, 4},
		{"async sink 3", nil, nil, stage.KindAsyncSink, 3},
		{"batch", nil, nil, stage.KindBatch, 1},
	}
	m4 := stage.Map("m", id, stage.WithConcurrency(4))
	f := stage.Filter("f", func(context.Context, int) (bool, error) { return true, nil })
	fm := stage.FlatMap("fm", func(context.Context, int) ([]int, error) { return nil, nil }, stage.WithConcurrency(2))
	s4 := stage.Sink("s", sink, stage.WithConcurrency(4))
	a3 := stage.AsyncSink("a", func(context.Context, int, stage.Done) error { return nil }, stage.WithConcurrency(3))
	bt := stage.Batch("b", stage.BatchConfig[int]{MaxBytes: 10})
	m := stage.Map("m", id)
	cases[0].s, cases[0].err = m, buildErr(m)
	cases[1].s, cases[1].err = m4, buildErr(m4)
	cases[2].s, cases[2].err = f, buildErr(f)
	cases[3].s, cases[3].err = fm, buildErr(fm)
	cases[4].s, cases[4].err = s4, buildErr(s4)
	cases[5].s, cases[5].err = a3, buildErr(a3)
	cases[6].s, cases[6].err = bt, buildErr(bt)
	for _, c := range cases {
		st := c.s.Stats()
		if c.err != nil || st.Kind != c.kind || st.Concurrency != c.concurrency {
			t.Errorf("%s: err %v kind %s concurrency %d; want nil %s %d", c.name, c.err, st.Kind, st.Concurrency, c.kind, c.concurrency)
		}
	}
	named := stage.Map("named", id, stage.WithCapacity(7), stage.WithConcurrency(3))
	if st := named.Stats(); named.Name() != "named" || st.QueueCap != 7 || st.QueueLen != 0 || st.Concurrency != 3 {
		t.Fatalf("stats before start: %q %+v", named.Name(), st)
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
