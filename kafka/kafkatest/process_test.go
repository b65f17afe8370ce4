package kafkatest_test

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka/kafkatest"
)

// TestStartProcess runs the kfakebroker command as a child process, round
// trips records through it with librdkafka and stops it.
func TestStartProcess(t *testing.T) {
	ctx := testCtx(t, 50*time.Second)
	addrFile := filepath.Join(t.TempDir(), "addr")
	const topic, parts = "bench", 2
	proc, err := kafkatest.StartProcess(ctx, "--brokers", "2", "--topic", topic+":2", "--addr-file", addrFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Stop() })

	if n := len(strings.Split(proc.Addr(), ",")); n != 2 {
		t.Fatalf("Addr %q lists %d brokers, want 2", proc.Addr(), n)
	}
	if proc.Pid() == os.Getpid() || proc.Pid() <= 0 {
		t.Fatalf("Pid %d", proc.Pid())
	}
	b, err := os.ReadFile(addrFile)
	if err != nil {
		t.Fatalf("address file: %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != proc.Addr() {
		t.Fatalf("address file holds %q, stdout said %q", got, proc.Addr())
	}

	p := newProducer(t, proc.Addr())
	sent := produce(ctx, t, p, topic, "v", nRecords)
	cons := newConsumer(t, proc.Addr(), "proc")
	if err := cons.SubscribeTopics([]string{topic}, nil); err != nil {
		t.Fatal(err)
	}
	consume(ctx, t, cons, sent)
	checkCommitted(t, cons, p, topic, parts)

	// Close the clients before the broker so they do not log reconnects.
	if err := cons.Close(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := proc.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := proc.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(addrFile); !os.IsNotExist(err) {
		t.Errorf("address file still there after Stop: %v", err)
	}
	for _, a := range strings.Split(proc.Addr(), ",") {
		if conn, err := net.Dial("tcp", a); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after Stop", a)
		}
	}
}

// TestStartProcessTrimInterval checks the command's --trim-interval loop
// trims topics created at start and topics created later by clients.
func TestStartProcessTrimInterval(t *testing.T) {
	ctx := testCtx(t, 50*time.Second)
	proc, err := kafkatest.StartProcess(ctx, "--topic", "a:2", "--auto-create-topics", "--trim-interval", "20ms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Stop() })

	p := newProducer(t, proc.Addr())
	produce(ctx, t, p, "a", "v", 200)
	produce(ctx, t, p, "auto", "v", 200) // auto-created, kfake default 10 partitions

	// The trim loop runs in the child, so there is no signal to wait on:
	// poll the watermarks until it has trimmed everything we produced.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for _, tc := range []struct {
		topic string
		parts int
	}{{"a", 2}, {"auto", 10}} {
		for {
			lows, highs := watermarks(t, p, tc.topic, tc.parts)
			if sum(highs) == 200 && slices.Equal(lows, highs) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s not trimmed: lows %v highs %v", tc.topic, lows, highs)
			case <-tick.C:
			}
		}
	}
	p.Close()
	if err := proc.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// TestStartProcessBadFlags checks a child that fails to start is reported
// with its stderr.
func TestStartProcessBadFlags(t *testing.T) {
	ctx := testCtx(t, 50*time.Second)
	_, err := kafkatest.StartProcess(ctx, "--topic", "x:zero")
	if err == nil || !strings.Contains(err.Error(), "bad partition count") {
		t.Fatalf("StartProcess with a bad flag: %v", err)
	}
}
