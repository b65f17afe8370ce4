package faulttest

import (
	"net"
	"testing"
	"time"

	"github.com/sluicehq/sluice/kafka/kafkatest"
)

// TestFaultAllBrokersDown: the (single-broker) cluster goes down for 10 s mid-stream and comes
// back on the same port from its data directory. The source keeps polling through the outage
// (connection errors are logged, commits retried), the group re-forms, and every record is
// processed with commits reaching the end.
func TestFaultAllBrokersDown(t *testing.T) {
	const n, parts = 3000, 4
	opts := []kafkatest.Option{kafkatest.DataDir(t.TempDir()), kafkatest.Ports(freePort(t)), kafkatest.Topic("in", parts)}
	c1, err := kafkatest.Start(opts...)
	if err != nil {
		t.Fatal(err)
	}
	addr := c1.Addr()
	want := produce(t, addr, "in", "v", n)
	s := newSeen()
	r := start(t, addr, s, runOpts{group: "g", topic: "in", conc: 4, work: slowWork})
	kafkatest.WaitFor(t, 30*time.Second, "a third processed", func() bool { return s.distinct() >= n/3 })
	c1.Close()
	time.Sleep(10 * time.Second) // the fault itself: every broker is down this long
	c2 := kafkatest.StartT(t, opts...)
	if c2.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", c2.Addr(), addr)
	}
	kafkatest.WaitFor(t, 90*time.Second, "all processed after the restart", func() bool { return s.distinct() == n })
	checkAll(t, s, want, addr, "g", "in", parts)
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
