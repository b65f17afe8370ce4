// Command seed replays sluice's seed incident as a service: a producer of 980 records/s of
// 40 KiB (~38 MiB/s) feeds a downstream that has 10 concurrent slots of 20 ms each (500
// records/s). Without a budget the consumer would buffer the difference until it was
// OOM-killed; with sluice the in-flight bytes stay under the budget (64 MiB by default),
// the source pauses partitions, the lag grows instead of the RSS, and the progress line shows
// RSS flat and "downstream" as the bottleneck.
//
//	go run ./examples/seed --duration 30s
package main

import (
	"context"
	"encoding/binary"
	"os"
	"time"

	"github.com/sluicehq/sluice/internal/service"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

const (
	recordBytes = 40 << 10
	rate        = 980
	slots       = 10
	callTime    = 20 * time.Millisecond
)

func main() { os.Exit(run(context.Background(), os.Args[1:])) }

func run(ctx context.Context, args []string) int {
	payload := make([]byte, recordBytes) // shared by every generated record (read-only)
	return service.Main(ctx, service.Spec{
		Name:     "seed",
		Defaults: service.Defaults{Topic: "seed", Group: "seed-consumer", Budget: 64 << 20},
		Topics:   map[string]int{"seed": 8},
		Load: func(i int64) ([]byte, []byte) {
			v := make([]byte, recordBytes)
			copy(v, payload)
			binary.BigEndian.PutUint64(v, uint64(i))
			return nil, v
		},
		Rate:  rate,
		Build: build,
	}, args, os.Stderr)
}

func build(env *service.Env) (*pipeline.Pipeline, error) {
	b := pipeline.New(env.Source, env.Options(pipeline.WithName("seed"))...)
	ids := pipeline.Then(b.Source(), stage.Map("parse", func(_ context.Context, ev *stage.Event) (uint64, error) {
		if len(ev.Value) < 8 {
			return 0, nil
		}
		return binary.BigEndian.Uint64(ev.Value), nil
	}, stage.WithCapacity(256)))
	pipeline.To(ids, stage.Sink("downstream", func(ctx context.Context, _ uint64) error {
		t := time.NewTimer(callTime) // the slow downstream call
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}, stage.WithConcurrency(slots)))
	return b.Build()
}
