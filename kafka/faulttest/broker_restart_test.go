package faulttest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicehq/sluice/kafka/kafkatest"
	"github.com/sluicehq/sluice/stage"
)

// TestFaultOneBrokerRestarted (fault scenario 5): with three brokers, one broker goes down
// mid-stream (every connection to it is reset, new ones are refused) for 5 s and comes back
// with its state, as a broker process restarted from its log directory does. Clients see
// exactly what a restart shows them; kfake's own RemoveNode/AddNode is not used because it
// closes the listener but keeps serving the open connections. Nothing is lost and commits
// reach the end.
func TestFaultOneBrokerRestarted(t *testing.T) {
	const n, parts = 2000, 4
	var nodes restartableListeners
	cl := kafkatest.StartT(t, kafkatest.Brokers(3), kafkatest.Topic("in", parts), kafkatest.KfakeOption(kfake.ListenFn(nodes.listen)))
	want := produce(t, cl.Addr(), "in", "v", n)
	s := newSeen()
	// 2 ms a record over 4 workers: the run lasts about a second, the outage falls inside it.
	r := start(t, cl.Addr(), s, runOpts{group: "g", topic: "in", conc: 4, work: func(ctx context.Context, _ *stage.Event) error {
		time.Sleep(2 * time.Millisecond)
		return nil
	}})
	kafkatest.WaitFor(t, 30*time.Second, "a quarter processed", func() bool { return s.distinct() >= n/4 })
	if s.distinct() == n {
		t.Fatal("everything was processed before the restart: the fault would test nothing")
	}
	victim := int(cl.Kfake().LeaderFor("in", 0))
	nodes.down(victim)
	time.Sleep(5 * time.Second) // the outage itself: nothing to wait for
	nodes.up(victim)
	kafkatest.WaitFor(t, 60*time.Second, "all processed", func() bool { return s.distinct() == n })
	checkAll(t, s, want, cl.Addr(), "g", "in", parts)
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
	reset, refused := nodes.counts()
	if reset == 0 {
		t.Fatal("the restart reset no connection")
	}
	t.Logf("connections reset: %d, refused while down: %d; source errors: %d", reset, refused, r.src.Stats().Errors)
}

// restartableListeners hands kfake one listener per broker (in node order) whose broker can
// be taken down and brought back.
type restartableListeners struct {
	mu sync.Mutex
	ls []*restartableListener
}

func (r *restartableListeners) listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	l := &restartableListener{Listener: ln, conns: map[net.Conn]struct{}{}}
	r.mu.Lock()
	r.ls = append(r.ls, l)
	r.mu.Unlock()
	return l, nil
}

func (r *restartableListeners) node(i int) *restartableListener {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ls[i]
}

// down resets every connection of broker i and refuses new ones until up.
func (r *restartableListeners) down(i int) { r.node(i).setDown(true) }

func (r *restartableListeners) up(i int) { r.node(i).setDown(false) }

// counts returns the connections reset by down and those refused while down, over all brokers.
func (r *restartableListeners) counts() (reset, refused int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.ls {
		l.mu.Lock()
		reset, refused = reset+l.reset, refused+l.refused
		l.mu.Unlock()
	}
	return reset, refused
}

type restartableListener struct {
	net.Listener
	mu      sync.Mutex // guards the fields below
	isDown  bool
	conns   map[net.Conn]struct{}
	reset   int // connections closed by down
	refused int // connections closed at accept while down
}

func (l *restartableListener) setDown(d bool) {
	l.mu.Lock()
	l.isDown = d
	var open []net.Conn
	if d {
		for c := range l.conns {
			open = append(open, c)
		}
		l.reset += len(open)
	}
	l.mu.Unlock()
	for _, c := range open { // Close takes l.mu
		_ = c.Close()
	}
}

func (l *restartableListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.isDown {
			l.refused++
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		tc := &trackedConn{Conn: c, l: l}
		l.conns[tc] = struct{}{}
		l.mu.Unlock()
		return tc, nil
	}
}

type trackedConn struct {
	net.Conn
	l    *restartableListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
