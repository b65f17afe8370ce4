package kafka_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka"
	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/stage"
)

// eosCrashChild is the process TestExactlyOnceCrash kills: an exactly-once copy of "in" to
// "out" (group g-crash, transactional id tx-crash, a static member so that its restart takes
// its partitions back at once), with a little work per record so that kills land mid-stream.
func eosCrashChild() int {
	cfg := eosConfig(os.Getenv("SLUICE_EOS_BROKERS"), "g-crash", "tx-crash")
	cfg.GroupInstanceID = "crash-child"
	src, err := kafka.NewSource(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	prod, err := src.NewProducer(kafka.ProducerConfig{Topic: "out"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	b := pipeline.New(src, pipeline.WithErrorHandler(prod.DeadLetter("dlq")))
	pipeline.To(pipeline.Then(b.Source(), copyStage("c", crashWork, stage.WithUnordered())), prod.Sink("produce"))
	p, err := b.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	err = p.Run(context.Background()) // returns only on a failure: the parent sends SIGKILL
	fmt.Fprintln(os.Stderr, "eos child:", err)
	return 1
}

// crashWork takes longer for one key in four: with the copy stage unordered, records finish
// out of order, so a commit point often has finished offsets above it (what the barrier must
// not let into a transaction whose offset stays below them).
func crashWork(ev *stage.Event) {
	if len(ev.Key) > 0 && ev.Key[len(ev.Key)-1]%4 == 0 {
		time.Sleep(2 * time.Millisecond)
		return
	}
	time.Sleep(100 * time.Microsecond)
}

// TestExactlyOnceCrash: the exactly-once pipeline runs in a child process that is SIGKILLed at
// random moments while it works, eight times, while input is being produced, and restarted each time (a
// restart fences the killed instance's open transaction). Then a last instance finishes the
// input. A read_committed reader of the output sees every input exactly once: the same
// multiset, no duplicate from a transaction whose offsets were not committed, nothing lost.
func TestExactlyOnceCrash(t *testing.T) {
	cl := startCluster(t, kafkatest.Topic("in", 4), kafkatest.Topic("out", 4), kafkatest.Topic("dlq", 1))
	var mu sync.Mutex
	want := map[string]bool{}
	stop := make(chan struct{})
	produced := make(chan error, 1)
	go func() { // input, in batches, for as long as the kills go on
		for batch := 0; ; batch++ {
			vals, err := kafkatest.ProduceN(cl.Addr(), "in", fmt.Sprintf("in%d", batch), 100, 8)
			if err != nil {
				produced <- err
				return
			}
			mu.Lock()
			for v := range vals {
				want[v] = true
			}
			mu.Unlock()
			select {
			case <-stop:
				produced <- nil
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	child := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SLUICE_EOS_CHILD=1", "SLUICE_EOS_BROKERS="+cl.Addr())
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	kill := func(cmd *exec.Cmd) {
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
	}
	const kills = 8
	last := int64(0)
	for i := range kills {
		cmd := child()
		// A random moment once this instance is working (it committed past the last one's
		// commit): its transactions are open and its records in flight.
		kafkatest.WaitFor(t, 60*time.Second, fmt.Sprintf("child %d to commit past %d", i, last), func() bool {
			n, err := kafkatest.CommittedSum(cl.Addr(), "g-crash", "in", 4)
			return err == nil && n > last
		})
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
		kill(cmd)
		last, _ = kafkatest.CommittedSum(cl.Addr(), "g-crash", "in", 4)
	}
	close(stop)
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	total := len(want)
	mu.Unlock()
	cmd := child()
	kafkatest.WaitFor(t, 60*time.Second, fmt.Sprintf("the last child to commit all %d inputs", total), func() bool {
		n, err := kafkatest.CommittedSum(cl.Addr(), "g-crash", "in", 4)
		return err == nil && n == int64(total)
	})
	kill(cmd)
	values, _ := readCommittedOutput(t, cl.Addr(), "out", total, 30*time.Second)
	checkExactlyOnce(t, want, values)
	t.Logf("%d inputs, %d kills: each output exactly once", total, kills)
}
