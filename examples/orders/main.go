// Command orders is sluice's main example service: it consumes JSON order events, decodes
// them (bad JSON goes to a dead-letter topic), enriches each through a slow I/O-like call
// with per-key ordering, batches them and produces the enriched orders to an output topic,
// committing an order's offset only once its enriched record is delivered.
//
//	go run ./examples/orders --duration 20s
//
// Without --brokers it starts an embedded broker (topics orders, orders-enriched,
// orders-dlq) and a load generator of ~2000 orders/s, ~1% of them invalid JSON. Open
// http://127.0.0.1:8080/debug/pipeline for the live graph, /metrics for Prometheus.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/sluicehq/sluice/internal/service"
	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Order is an input event.
type Order struct {
	ID       string  `json:"id"`
	Customer string  `json:"customer"`
	Amount   float64 `json:"amount"`
	Items    int     `json:"items"`
}

// Enriched is an output event.
type Enriched struct {
	Order
	Tier       string    `json:"tier"`
	EnrichedAt time.Time `json:"enriched_at"`
}

func main() { os.Exit(run(context.Background(), os.Args[1:])) }

func run(ctx context.Context, args []string) int {
	var out, dlq string
	return service.Main(ctx, service.Spec{
		Name:     "orders",
		Defaults: service.Defaults{Topic: "orders", Group: "orders-enricher", Budget: 64 << 20},
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&out, "out-topic", "orders-enriched", "output topic")
			fs.StringVar(&dlq, "dlq-topic", "orders-dlq", "dead-letter topic for undecodable orders")
		},
		Topics: map[string]int{"orders": 8, "orders-enriched": 8, "orders-dlq": 1},
		Load:   genOrder,
		Rate:   2000,
		Build: func(env *service.Env) (*pipeline.Pipeline, error) {
			return build(env, out, dlq)
		},
	}, args, os.Stderr)
}

// genOrder is the load generator's record i: an order keyed by customer, 1% invalid JSON.
func genOrder(i int64) (key, value []byte) {
	cust := fmt.Sprintf("c-%d", (i*7919)%20000) // 20000 customers, spread
	if i%100 == 99 {
		return []byte(cust), []byte(`{"id": "broken`)
	}
	v, _ := json.Marshal(Order{ID: fmt.Sprintf("o-%d", i), Customer: cust, Amount: float64(i%10000) / 100, Items: int(i%7) + 1})
	return []byte(cust), v
}

func build(env *service.Env, outTopic, dlqTopic string) (*pipeline.Pipeline, error) {
	prod := env.Producer
	b := pipeline.New(env.Source, env.Options(pipeline.WithName("orders"), pipeline.WithErrorHandler(prod.DeadLetter(dlqTopic)))...)
	orders := pipeline.Then(b.Source(), stage.Map("decode", decode, stage.WithConcurrency(2)))
	enriched := pipeline.Then(orders, stage.Map("enrich", enrich, stage.WithConcurrency(8), stage.WithTimeout(time.Second)))
	batches := pipeline.Then(enriched, stage.Batch("batch", stage.BatchConfig[Enriched]{MaxCount: 50, Linger: 50 * time.Millisecond}))
	records := pipeline.Then(batches, stage.FlatMap("to-records", func(_ context.Context, batch []Enriched) ([]kafka.Record, error) {
		return toRecords(outTopic, batch)
	}))
	pipeline.To(records, prod.Sink("produce", stage.WithConcurrency(4)))
	return b.Build()
}

// decode parses the event's JSON; an error sends the event to the dead-letter topic.
func decode(_ context.Context, ev *stage.Event) (Order, error) {
	var o Order
	if err := json.Unmarshal(ev.Value, &o); err != nil {
		return Order{}, fmt.Errorf("decode order: %w", err)
	}
	if o.ID == "" {
		return Order{}, fmt.Errorf("decode order: missing id")
	}
	return o, nil
}

// enrich stands for a slow lookup (2–5 ms), honouring cancellation.
func enrich(ctx context.Context, o Order) (Enriched, error) {
	t := time.NewTimer(time.Duration(2000+rand.IntN(3000)) * time.Microsecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return Enriched{}, ctx.Err()
	case <-t.C:
	}
	tier := "standard"
	if o.Amount > 50 {
		tier = "gold"
	}
	return Enriched{Order: o, Tier: tier, EnrichedAt: time.Now().UTC()}, nil
}

func toRecords(topic string, batch []Enriched) ([]kafka.Record, error) {
	recs := make([]kafka.Record, len(batch))
	for i, e := range batch {
		v, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		recs[i] = kafka.Record{Topic: topic, Key: []byte(e.Customer), Value: v}
	}
	return recs, nil
}
