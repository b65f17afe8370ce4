package main

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rateFlag collects repeated --produce-rate topic=N flags.
type rateFlag map[string]float64

func (f rateFlag) String() string { return "" }

func (f rateFlag) Set(s string) error {
	name, rs, ok := strings.Cut(s, "=")
	r, err := strconv.ParseFloat(rs, 64)
	if !ok || name == "" || err != nil || r <= 0 {
		return fmt.Errorf("want topic=records-per-second (> 0), got %q", s)
	}
	f[name] = r
	return nil
}

// produceLimiter makes a broker that accepts only rate records per second of its topics: each
// Produce request waits (kfake's SleepControl, so other connections keep being served) until
// the limiter has "written" the records it carries for those topics, one after the other at
// rate. The request is then handled normally, so nothing is lost: a client sending faster than
// rate sees its responses come later and later, as from a broker that cannot keep up.
type produceLimiter struct {
	rates map[string]float64

	mu   sync.Mutex
	next time.Time // when the limiter finishes what it has accepted so far
}

// install adds the limiter to c (kept for every Produce request).
func (l *produceLimiter) install(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		name := func(t *kmsg.ProduceRequestTopic) string {
			if t.Topic == "" { // Produce v13+ names topics by id
				if info := c.TopicIDInfo(t.TopicID); info != nil {
					return info.Topic
				}
			}
			return t.Topic
		}
		if d := l.reserve(time.Now(), kreq.(*kmsg.ProduceRequest), name); d > 0 {
			c.SleepControl(func() { time.Sleep(d) })
		}
		return nil, nil, false // then kfake handles it
	})
}

// burst is the idle time the limiter may make up for: kfake runs the requests of one
// connection one after the other (a request behind a sleeping one is looked at only when that
// one is answered), so each request reaches the limiter a little after the one before it
// finished; without this credit those gaps, not the rate, would bound a busy connection.
// Over any window the limiter still takes at most rate × (window + burst) records.
const burst = 200 * time.Millisecond

// reserve books req's limited records after those booked before it and returns how long req
// must wait from now for them to be written.
func (l *produceLimiter) reserve(now time.Time, req *kmsg.ProduceRequest, name func(*kmsg.ProduceRequestTopic) string) time.Duration {
	var cost float64 // seconds
	for i := range req.Topics {
		t := &req.Topics[i]
		rate, ok := l.rates[name(t)]
		if !ok {
			continue
		}
		for _, p := range t.Partitions {
			cost += float64(batchRecords(p.Records)) / rate
		}
	}
	if cost == 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if idle := now.Add(-burst); l.next.Before(idle) {
		l.next = idle // credit for at most burst of the time nothing was sent
	}
	l.next = l.next.Add(time.Duration(cost * float64(time.Second)))
	return l.next.Sub(now)
}

// batchRecords counts the records of the record batches (magic 2) in b: each batch is
// baseOffset int64, batchLength int32 (the bytes after it), and its record count is the int32
// at byte 57.
func batchRecords(b []byte) int {
	n := 0
	for len(b) >= 61 {
		size := 12 + int(int32(binary.BigEndian.Uint32(b[8:12])))
		if size < 61 || size > len(b) {
			break
		}
		n += int(int32(binary.BigEndian.Uint32(b[57:61])))
		b = b[size:]
	}
	return n
}
