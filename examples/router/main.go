// Command router is a stateless filter and router: it decodes JSON events, drops heartbeats,
// and routes each event by its "kind" field to one of two topics (payments → router-payments,
// everything else → router-other). Undecodable events go to the dead-letter topic.
//
//	go run ./examples/router --duration 20s
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/sluicehq/sluice/internal/service"
	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Event is an input event.
type Event struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"-"`
	Payload json.RawMessage `json:"payload"`
	raw     []byte
}

var kinds = []string{"payment", "click", "view", "heartbeat", "payment"}

func main() { os.Exit(run(context.Background(), os.Args[1:])) }

func run(ctx context.Context, args []string) int {
	var payments, other, dlq string
	return service.Main(ctx, service.Spec{
		Name:     "router",
		Defaults: service.Defaults{Topic: "events", Group: "router", Budget: 32 << 20},
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&payments, "payments-topic", "router-payments", "topic for kind=payment")
			fs.StringVar(&other, "other-topic", "router-other", "topic for the other kinds")
			fs.StringVar(&dlq, "dlq-topic", "router-dlq", "dead-letter topic")
		},
		Topics: map[string]int{"events": 4, "router-payments": 4, "router-other": 4, "router-dlq": 1},
		Load: func(i int64) ([]byte, []byte) {
			key := []byte(fmt.Sprintf("k-%d", i%1000))
			if i%50 == 49 {
				return key, []byte("not json")
			}
			return key, []byte(fmt.Sprintf(`{"kind":%q,"payload":{"n":%d}}`, kinds[i%int64(len(kinds))], i))
		},
		Rate: 1000,
		Build: func(env *service.Env) (*pipeline.Pipeline, error) {
			return build(env, payments, other, dlq)
		},
	}, args, os.Stderr)
}

func build(env *service.Env, payments, other, dlq string) (*pipeline.Pipeline, error) {
	prod := env.Producer
	b := pipeline.New(env.Source, env.Options(pipeline.WithName("router"), pipeline.WithErrorHandler(prod.DeadLetter(dlq)))...)
	events := pipeline.Then(b.Source(), stage.Map("decode", decode, stage.WithConcurrency(2)))
	kept := pipeline.Then(events, stage.Filter("drop-heartbeats", func(_ context.Context, e Event) (bool, error) {
		return e.Kind != "heartbeat", nil
	}))
	recs := pipeline.Then(kept, stage.Map("route", func(_ context.Context, e Event) (kafka.Record, error) {
		return kafka.Record{Topic: route(e.Kind, payments, other), Key: []byte(e.Key), Value: e.raw}, nil
	}))
	pipeline.To(recs, prod.Sink("produce", stage.WithConcurrency(2)))
	return b.Build()
}

func route(kind, payments, other string) string {
	if kind == "payment" {
		return payments
	}
	return other
}

// decode parses the event (copying what it keeps: the event's bytes are recycled).
func decode(_ context.Context, ev *stage.Event) (Event, error) {
	var e Event
	if err := json.Unmarshal(ev.Value, &e); err != nil {
		return Event{}, fmt.Errorf("decode: %w", err)
	}
	if e.Kind == "" {
		return Event{}, errors.New("decode: missing kind")
	}
	e.Key = string(ev.Key)
	e.raw = append([]byte(nil), ev.Value...)
	return e, nil
}
