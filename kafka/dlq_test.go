package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

func TestFaultPoisonMessageToDeadLetter(t *testing.T) { deadLetterScenario(t, false) }
func TestFaultPanicInStageToDeadLetter(t *testing.T)  { deadLetterScenario(t, true) }

// deadLetterScenario: a decode stage fails (or panics) on one record: the record lands in the
// dead-letter topic with the sluice headers, the records after it are processed and the
// partition's committed offset passes it.
func deadLetterScenario(t *testing.T, panics bool) {
	const n, parts, poisonAt = 100, 2, 50
	cl := startCluster(t, kafkatest.Topic("in", parts), kafkatest.Topic("dlq", 1))
	keys, vals := make([][]byte, n+1), make([][]byte, n+1)
	want := map[string]bool{}
	for i := range n + 1 {
		keys[i] = []byte(fmt.Sprintf("k-%d", i%10))
		vals[i] = []byte(fmt.Sprintf("v-%d", i))
		if i == poisonAt {
			vals[i] = []byte("POISON")
		} else {
			want[string(vals[i])] = true
		}
	}
	tps := produceValues(t, cl.Addr(), "in", keys, vals)
	poison := tps[poisonAt]
	prod, err := kafka.NewProducer(kafka.ProducerConfig{Brokers: cl.Addr(), Logger: kafkatest.Logger(), Budget: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(context.Background())
	var got seen
	r := start(t, newSource(t, sourceConfig(cl.Addr(), "g-dlq", "in")), func(b *pipeline.Builder) {
		dec := pipeline.Then(b.Source(), stage.Map("decode", func(_ context.Context, ev *stage.Event) (*stage.Event, error) {
			if string(ev.Value) == "POISON" {
				if panics {
					panic("cannot decode")
				}
				return nil, errors.New("cannot decode")
			}
			return ev, nil
		}, stage.WithRetry(stage.Retry{Retries: 2, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}), stage.WithConcurrency(2)))
		pipeline.To(dec, got.sink("collect", nil))
	}, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
	kafkatest.WaitFor(t, 60*time.Second, "every record to complete", func() bool { return r.p.Stats().Completed >= n+1 })
	requireCommittedAtEnd(t, cl.Addr(), "g-dlq", "in", parts)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	requireSet(t, want, values(got.all()))
	if c := committed(t, cl.Addr(), "g-dlq", "in", parts)[poison.Partition]; c <= int64(poison.Offset) {
		t.Fatalf("partition %d committed %d, not past the poison offset %d", poison.Partition, c, poison.Offset)
	}
	if prod.Stats().DeadLetters != 1 {
		t.Fatalf("DeadLetters = %d, want 1", prod.Stats().DeadLetters)
	}
	dl := readMessages(t, cl.Addr(), "dlq", 1, 30*time.Second)
	if len(dl) != 1 || string(dl[0].Value) != "POISON" || string(dl[0].Key) != string(keys[poisonAt]) {
		t.Fatalf("dead-letter topic holds %v", dl)
	}
	h := map[string]string{}
	for _, x := range dl[0].Headers {
		h[x.Key] = string(x.Value)
	}
	wantErr := "cannot decode"
	if panics {
		wantErr = "panic"
	}
	for key, v := range map[string]string{
		kafka.HeaderStage: "decode", kafka.HeaderTopic: "in",
		kafka.HeaderPartition: strconv.Itoa(int(poison.Partition)), kafka.HeaderOffset: strconv.FormatInt(int64(poison.Offset), 10),
	} {
		if h[key] != v {
			t.Errorf("header %s = %q, want %q", key, h[key], v)
		}
	}
	if !strings.Contains(h[kafka.HeaderError], wantErr) || h[kafka.HeaderAttempts] == "" {
		t.Errorf("headers %v: want an error containing %q and attempts", h, wantErr)
	}
}
