package kafka_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"slices"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// Order is what the example's "orders" topic carries, as JSON.
type Order struct {
	ID   int    `json:"id"`
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// prices is the example's catalogue, in cents.
var prices = map[string]int{"apple": 40, "bread": 250, "cheese": 600, "dates": 900}

// decode parses an order. A record that is not an order fails (after the stage's retries) and
// goes to the dead-letter topic.
func decode(_ context.Context, ev *stage.Event) (Order, error) {
	var o Order
	if err := json.Unmarshal(ev.Value, &o); err != nil {
		return Order{}, fmt.Errorf("decode order: %w", err)
	}
	return o, nil
}

// enrich prices an order and makes the output record, keyed by the order's ID.
func enrich(_ context.Context, o Order) (kafka.Record, error) {
	v := fmt.Sprintf(`{"id":%d,"item":%q,"qty":%d,"cents":%d}`, o.ID, o.Item, o.Qty, o.Qty*prices[o.Item])
	return kafka.Record{Key: fmt.Appendf(nil, "%d", o.ID), Value: []byte(v)}, nil
}

// Example is the README's minimal pipeline, run against the embedded broker: five orders, one
// of them poison, go in; four priced orders come out on "orders-out", the poison one goes to
// "orders-dlq" after its retries, and all five are committed.
func Example() {
	cluster, err := kafkatest.Start(kafkatest.Topic("orders", 2), kafkatest.Topic("orders-out", 1), kafkatest.Topic("orders-dlq", 1))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close() // after the producer's Close (defers run last-in first-out)
	addr := cluster.Addr()
	if err := kafkatest.Produce(addr, "orders",
		`{"id":1,"item":"apple","qty":3}`,
		`{"id":2,"item":"bread","qty":1}`,
		`{"id":3,"item":`, // poison: decode fails
		`{"id":4,"item":"cheese","qty":2}`,
		`{"id":5,"item":"dates","qty":1}`,
	); err != nil {
		log.Fatal(err)
	}

	// Stop the pipeline once every input has its outcome: four outputs and one dead letter,
	// read back from the broker by a separate consumer.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type read struct {
		out, dlq []string
		err      error
	}
	results := make(chan read, 1)
	go func() {
		defer cancel()
		var r read
		outs, err := kafkatest.ReadMessages(addr, "orders-out", 4, 30*time.Second)
		for _, m := range outs {
			r.out = append(r.out, string(m.Key)+" "+string(m.Value))
		}
		dlq, err2 := kafkatest.ReadMessages(addr, "orders-dlq", 1, 30*time.Second)
		for _, m := range dlq {
			h := map[string]string{}
			for _, x := range m.Headers {
				h[x.Key] = string(x.Value)
			}
			r.dlq = append(r.dlq, fmt.Sprintf("%s (stage %s, %s attempts: %s)", m.Value, h[kafka.HeaderStage], h[kafka.HeaderAttempts], h[kafka.HeaderError]))
		}
		r.err = errors.Join(err, err2)
		results <- r
	}()

	src, err := kafka.NewSource(kafka.Config{
		Brokers: cluster.Addr(), GroupID: "orders", Topics: []string{"orders"},
		Budget: 64 << 20, // the whole data budget: in flight + held back + librdkafka prefetch + producer queue
	})
	// The source's brokers, budget and largest message; the producer is yours: close it after Run.
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "orders-out"})
	defer prod.Close(context.Background())

	b := pipeline.New(src, pipeline.WithErrorHandler(prod.DeadLetter("orders-dlq"))) // src brings its budget
	orders := pipeline.Then(b.Source(), stage.Map("decode", decode, stage.WithRetry(stage.Retry{Retries: 2, Backoff: 10 * time.Millisecond})))
	records := pipeline.Then(orders, stage.Map("enrich", enrich, stage.WithConcurrency(8)))
	pipeline.To(records, prod.Sink("produce"))

	p, err := b.Build() // wiring and configuration errors, each naming its field
	err = p.Run(ctx)    // blocks; cancel ctx to drain, commit and return

	if err != nil {
		log.Fatal(err)
	}
	r := <-results
	if r.err != nil {
		log.Fatal(r.err)
	}
	slices.Sort(r.out)
	for _, o := range r.out {
		fmt.Println("out:", o)
	}
	for _, d := range r.dlq {
		fmt.Println("dlq:", d)
	}
	committed, err := kafkatest.CommittedSum(addr, "orders", "orders", 2)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("committed:", committed)
	// Output:
	// out: 1 {"id":1,"item":"apple","qty":3,"cents":120}
	// out: 2 {"id":2,"item":"bread","qty":1,"cents":250}
	// out: 4 {"id":4,"item":"cheese","qty":2,"cents":1200}
	// out: 5 {"id":5,"item":"dates","qty":1,"cents":900}
	// dlq: {"id":3,"item": (stage decode, 3 attempts: decode order: unexpected end of JSON input)
	// committed: 5
}
