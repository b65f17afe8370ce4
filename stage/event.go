package stage

import (
	"time"

	"github.com/sluicehq/sluice/internal/flow"
	"github.com/sluicehq/sluice/pool"
)

// Header is a key/value pair carried with an Event (a Kafka record header).
type Header struct {
	Key   string
	Value []byte
}

// Event is the unit a source emits: a Kafka-record-like value with a completion count. Events
// are pooled: take one with GetEvent, hand it to the pipeline, and the pipeline returns it to
// the pool with Release once it and everything derived from it finished.
//
// Ownership (one rule for every source): from emission until completion the event, and the
// bytes behind Key, Value and header values, belong to the pipeline. A stage may read them
// while processing the message that carries it; to keep any of them beyond its call it must
// copy them. After completion the event and its bytes are recycled for another record: the
// in-memory sources write the next record into the same buffers, and under the race detector
// (go test -race) or in debug mode (pool.SetDebug) every source's recycled bytes are
// overwritten with 0xDB, so a stage that kept them fails its tests instead of corrupting data
// in production. Bytes a stage puts into the event (a new Value) become the event's too.
//
// What a stage may change: Key, Value, Headers and Timestamp may be replaced (a decoding or
// enriching stage passes the event on with new contents). The bytes they pointed to at
// emission belong to the source and must not be written in place: replace the slice instead
// (the Kafka source keeps the key it admitted, for its ordering slot). The record's identity
// is Origin, fixed at emission: the source completes, commits and releases its ordering slots
// by it, so changing Topic, Partition, Offset, SourceTag or Key never misleads the source.
type Event struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time
	// SourceTag is the source's own: the pipeline never reads it. The Kafka source stores the
	// partition's assignment epoch there (and reads it back from Origin), so a completion
	// that arrives after the partition was revoked is recognised and never committed.
	SourceTag uint64

	// life is the event's lifecycle in the engine: its Origin, budget bytes and the count of
	// messages derived from it.
	life flow.Life
}

// Origin is where a source event came from, as the source set it before emission: Topic,
// Partition, Offset and SourceTag (Tag). It is fixed at emission; stages may change the
// event's fields, never this. Sources complete and commit by it.
type Origin struct {
	Topic     string
	Partition int32
	Offset    int64
	Tag       uint64
}

// Origin returns the event's identity fixed at emission (the zero Origin before it).
func (ev *Event) Origin() Origin { return Origin(ev.life.Origin()) }

var events = pool.New(func(ev *Event) { resetEvent(ev) })

// resetEvent empties a retired event for its next use. Its generation is already the next one
// (Life.Retire or the last completion moved it on). Key, Value and Headers keep their
// capacity; their bytes are poisoned first when the aliasing check is on (see Event).
func resetEvent(ev *Event) {
	if flow.Poisoning() {
		flow.Poison(ev.Key)
		flow.Poison(ev.Value)
		for _, h := range ev.Headers {
			flow.Poison(h.Value)
		}
	}
	clear(ev.Headers) // keep the slice, not the header values of the last record
	ev.Topic, ev.Partition, ev.Offset = "", 0, 0
	ev.Key, ev.Value, ev.Headers = ev.Key[:0], ev.Value[:0], ev.Headers[:0]
	ev.Timestamp, ev.SourceTag = time.Time{}, 0
	ev.life.Reset()
}

// GetEvent takes an event from the pool, for a source to fill and emit. Its fields are empty;
// Key, Value and Headers may keep capacity from an earlier use (append into them to reuse it).
// The caller owns it until it is emitted; an event that is never emitted must be returned with
// Release.
func GetEvent() *Event {
	ev := events.Get()
	ev.life.Owner = ev
	ev.life.MarkLive()
	return ev
}

// Release returns an event that was never emitted to the pool. The event must not be used
// after Release. The pipeline recycles the events it completes itself; releasing one of those,
// releasing twice, or releasing while derived messages are in flight is a misuse: counted by
// pool.DoubleReleases (a panic in debug mode), and the event is left alone.
func (ev *Event) Release() {
	if ev.life.Retire() {
		events.Put(ev)
	}
}

func init() {
	flow.Hooks.Life = func(ev any) *flow.Life { return &ev.(*Event).life }
	flow.Hooks.New = func() *flow.Life { return &GetEvent().life }
	flow.Hooks.Reset = func(l *flow.Life) { resetEvent(l.Owner.(*Event)) }
	flow.Hooks.Failure = func(stage string, err error, attempts int, ls []*flow.Life) error {
		evs := make([]*Event, len(ls))
		for i, l := range ls {
			evs[i] = l.Owner.(*Event)
		}
		return NewFailure(stage, err, attempts, evs)
	}
	flow.Hooks.Detach = func(f error, err error) error { return f.(*Failure).detached(err) }
	flow.Hooks.Panic = func(stage string, v any, stack []byte) error {
		return &PanicError{Stage: stage, Value: v, Stack: stack}
	}
	flow.Hooks.Core = func(st any) any { return st.(interface{ core() any }).core() }
}
