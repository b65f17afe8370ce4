package main

import (
	"bufio"
	"cmp"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/kafka/kafkatest"
)

// startRun runs the command in-process with args and returns its address; the cluster stops
// at the end of the test.
func startRun(t *testing.T, args ...string) string {
	t.Helper()
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := run(append([]string{"--exit-on-stdin-eof"}, args...), stdinR, stdoutW, io.Discard)
		stdoutW.Close()
		errc <- err
	}()
	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading address: %v (run: %v)", err, <-errc)
	}
	go io.Copy(io.Discard, stdoutR) //nolint:errcheck // drain until run closes stdout
	t.Cleanup(func() {
		stdinW.Close()
		if err := <-errc; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return strings.TrimSpace(line)
}

// TestProduceRate checks --produce-rate: 300 records to a topic limited to 100/s are all
// delivered, and not before the 3 s the limit allows (less its 200 ms burst); a topic without
// a limit is not slowed.
func TestProduceRate(t *testing.T) {
	addr := startRun(t, "--topic", "slow:4", "--topic", "fast:4", "--produce-rate", "slow=100")

	start := time.Now()
	if _, err := kafkatest.ProduceN(addr, "fast", "v", 300, 8); err != nil {
		t.Fatal(err)
	}
	fast := time.Since(start)

	start = time.Now()
	if _, err := kafkatest.ProduceN(addr, "slow", "v", 300, 8); err != nil {
		t.Fatal(err)
	}
	slow := time.Since(start)
	t.Logf("300 records: unlimited topic %v, limited to 100/s %v", fast, slow)
	if slow < 2700*time.Millisecond {
		t.Errorf("300 records at 100/s delivered in %v, want at least 2.8 s", slow)
	}
	if fast >= 2700*time.Millisecond {
		t.Errorf("300 records to the unlimited topic took %v: slowed like the limited one", fast)
	}
	got, err := kafkatest.ReadMessages(addr, "slow", 300, 30*time.Second)
	if err != nil || len(got) != 300 {
		t.Fatalf("read back %d of 300 records from the limited topic: %v", len(got), err)
	}
}

func TestBatchRecords(t *testing.T) {
	var b []byte
	var first int
	for _, n := range []int{3, 1, 7} {
		rb := kmsg.RecordBatch{Magic: 2, NumRecords: int32(n), Records: make([]byte, 10*n)}
		rb.Length = int32(49 + len(rb.Records))
		b = rb.AppendTo(b)
		first = cmp.Or(first, len(b))
	}
	if got := batchRecords(b); got != 11 {
		t.Fatalf("batchRecords = %d, want 11", got)
	}
	if got := batchRecords(b[:first+20]); got != 3 {
		t.Fatalf("batchRecords of a truncated second batch = %d, want 3", got)
	}
}

func TestProduceRateFlag(t *testing.T) {
	for _, s := range []string{"t", "=5", "t=0", "t=-1", "t=x"} {
		if err := (rateFlag{}).Set(s); err == nil {
			t.Errorf("Set(%q) succeeded", s)
		}
	}
	f := rateFlag{}
	if err := f.Set("out=500"); err != nil || f["out"] != 500 {
		t.Fatalf("Set(out=500): %v, %v", err, f)
	}
}
