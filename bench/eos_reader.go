package main

import (
	"fmt"
	"sync"
	"time"

	ckafka "github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// eosReader is bench eos's read_committed reader of the output topic: a group-less consumer
// assigned every partition from the beginning, on its own goroutine from startEOSReader to
// stop. For each output it decodes the input's partition, offset and timestamp (the copy
// worker's headers) and notes the receipt: counts per input offset, and the latency of each
// input's first receipt.
type eosReader struct {
	c       *ckafka.Consumer
	backlog []int64 // per input partition: offsets below it are the pre-filled backlog
	t0      time.Time
	quit    chan struct{}
	done    chan struct{}

	mu sync.Mutex // guards st
	st eosSeen
}

// eosSeen is what the reader received.
type eosSeen struct {
	counts          map[int32][]uint16 // receipts per input partition and offset
	distinct        int64              // inputs received at least once
	backlogDistinct int64              // of them, backlog inputs
	backlogDone     time.Time          // receipt of the backlog's last first-seen output
	last            time.Time          // the latest receipt
	pacedLat        []float64          // ms, first receipts of paced inputs
	backlogLat      []float64          // ms, first receipts of backlog inputs
	backlogRecv     []float64          // s since the reader started, first receipts of backlog inputs, in order
	malformed       int64              // outputs without the copy worker's headers
}

func startEOSReader(addr, topic string, parts int, backlog []int64) (*eosReader, error) {
	c, err := ckafka.NewConsumer(&ckafka.ConfigMap{"bootstrap.servers": addr, "group.id": fmt.Sprintf("%s-reader", topic),
		"enable.auto.commit": false, "isolation.level": "read_committed", "fetch.wait.max.ms": 100, "log_level": 3})
	if err != nil {
		return nil, err
	}
	var tps []ckafka.TopicPartition
	for p := range parts {
		tps = append(tps, ckafka.TopicPartition{Topic: &topic, Partition: int32(p), Offset: ckafka.OffsetBeginning})
	}
	if err := c.Assign(tps); err != nil {
		c.Close()
		return nil, err
	}
	r := &eosReader{c: c, backlog: backlog, t0: time.Now(), quit: make(chan struct{}), done: make(chan struct{}),
		st: eosSeen{counts: map[int32][]uint16{}}}
	go r.loop()
	return r, nil
}

func (r *eosReader) loop() {
	defer close(r.done)
	for {
		select {
		case <-r.quit:
			return
		default:
		}
		m, ok := r.c.Poll(100).(*ckafka.Message)
		if !ok || m.TopicPartition.Error != nil {
			continue
		}
		r.note(m, time.Now())
	}
}

// note records one output received at recv.
func (r *eosReader) note(m *ckafka.Message, recv time.Time) {
	p, off, ts, ok := parseCopyHeaders(func(key string) []byte {
		for _, h := range m.Headers {
			if h.Key == key {
				return h.Value
			}
		}
		return nil
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &r.st
	s.last = recv
	if !ok || p < 0 || int(p) >= len(r.backlog) || off < 0 {
		s.malformed++
		return
	}
	cs := s.counts[p]
	for int64(len(cs)) <= off {
		cs = append(cs, 0)
	}
	s.counts[p] = cs
	cs[off]++
	if cs[off] > 1 {
		return
	}
	s.distinct++
	lat := float64(recv.UnixNano())/1e6 - float64(ts)
	if off < r.backlog[p] {
		s.backlogDistinct++
		s.backlogDone = recv
		s.backlogLat = append(s.backlogLat, lat)
		s.backlogRecv = append(s.backlogRecv, recv.Sub(r.t0).Seconds())
	} else {
		s.pacedLat = append(s.pacedLat, lat)
	}
}

// snapshot returns the counters (not the slices) so far.
func (r *eosReader) snapshot() eosSeen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return eosSeen{distinct: r.st.distinct, backlogDistinct: r.st.backlogDistinct, last: r.st.last}
}

// settle waits until nothing arrived for quiet, or max passed.
func (r *eosReader) settle(quiet, max time.Duration) {
	end := time.Now().Add(max)
	for time.Now().Before(end) {
		last := r.snapshot().last
		if time.Since(last) >= quiet {
			return
		}
		time.Sleep(100 * time.Millisecond) // polling a clock, no signal to wait for
	}
}

// stop ends the reader's goroutine and closes its consumer (once) and returns what it saw.
func (r *eosReader) stop() eosSeen {
	select {
	case <-r.quit:
	default:
		close(r.quit)
		<-r.done
		r.c.Close()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

// account compares the inputs (every offset below final, per partition) with the receipts:
// lost inputs were never received; duplicates are receipts beyond an input's first.
func (s eosSeen) account(final []int64) (lost, dups int64) {
	for p, hi := range final {
		cs := s.counts[int32(p)]
		for off := range hi {
			if off >= int64(len(cs)) || cs[off] == 0 {
				lost++
			}
		}
	}
	for _, cs := range s.counts {
		for _, n := range cs {
			if n > 1 {
				dups += int64(n - 1)
			}
		}
	}
	return lost, dups
}

// sustainedRate is the least-squares slope of the number of backlog inputs received against
// time, over the receipts from the lo to the hi fraction of them (e.g. 0.1, 0.9): the rate
// away from the start (group join, first fetch) and from the tail (the last transaction's
// commit). An exactly-once reader receives in steps, one per commit: the window should span
// several commit intervals.
func (s eosSeen) sustainedRate(lo, hi float64) float64 {
	n := len(s.backlogRecv)
	a, b := int(lo*float64(n)), int(hi*float64(n))
	if b-a < 2 {
		return 0
	}
	x, y := make([]float64, 0, b-a), make([]float64, 0, b-a)
	for i := a; i < b; i++ {
		x = append(x, s.backlogRecv[i]-s.backlogRecv[a])
		y = append(y, float64(i))
	}
	return slope(x, y)
}
