package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"time"
)

// ScaleSample is one sample of a scale run: the group's lag (Σ high watermark − messages
// sunk), messages sunk by every process so far, and each process slot's RSS (0: not running).
type ScaleSample struct {
	T         float64 `json:"t_s"`
	Lag       int64   `json:"lag"`
	Processed int64   `json:"processed"`
	RSS       []int64 `json:"rss_bytes"`
}

// ScaleRun is one run of scale.json. Throughput and lag slope are least-squares fits over the
// second half of the run.
type ScaleRun struct {
	Replicas   int           `json:"replicas"`
	Throughput float64       `json:"throughput_per_s"`
	LagSlope   float64       `json:"lag_slope_per_s"`
	PeakRSSMax int64         `json:"peak_rss_bytes_max"`
	PeakRSS    []int64       `json:"peak_rss_bytes"` // per process slot
	Processed  int64         `json:"processed"`
	Lost       int64         `json:"lost"`
	Duplicates int64         `json:"duplicates"`
	FinalLag   int64         `json:"final_lag"`
	Committed  int64         `json:"committed"`
	Produced   int64         `json:"produced"`
	RunSeconds float64       `json:"run_s"`
	Samples    []ScaleSample `json:"samples"`
}

// RollingRun is scale.json's rolling restart: a three-process static group, each process
// restarted once (SIGTERM, and RestartDelayS after its exit a new process with the same
// group.instance.id). Rebalances are
// the assign and revoke callbacks the processes saw after the group first settled, leaving
// out each restarted process's own first assignment; a graceful stop's own revoke is not
// counted either (the snapshot is taken on SIGTERM). PartitionsMoved counts partitions held by
// more than one member (instance id) after the group first settled.
type RollingRun struct {
	ScaleRun
	Restarts        int             `json:"restarts"`
	Rebalances      uint64          `json:"rebalances"`
	PartitionsMoved int             `json:"partitions_moved"`
	SkippedFinished uint64          `json:"skipped_finished"`
	RevokeTimeS     float64         `json:"revoke_time_s"`
	RestartDelayS   float64         `json:"restart_delay_s"`
	SettledAtS      float64         `json:"settled_at_s"`
	RestartsAtS     []float64       `json:"restarts_at_s"`
	Members         []RollingMember `json:"members"`
	settled         time.Time
}

// RollingMember is one process of the rolling run: its instance id, which process of that id
// it was (0: the first), the rebalance callbacks counted for it, and the partitions it held
// (at the group's settling for a first process, at its first assignment for a restarted one).
type RollingMember struct {
	InstanceID  string  `json:"instance_id"`
	Incarnation int     `json:"incarnation"`
	Assigns     uint64  `json:"assigns_counted"`
	Revokes     uint64  `json:"revokes_counted"`
	Partitions  []int32 `json:"partitions"`
}

// ScaleResult is scale.json.
type ScaleResult struct {
	loadHeader
	BudgetBytes int64       `json:"budget_bytes"`
	Runs        []ScaleRun  `json:"runs"`
	Rolling     *RollingRun `json:"rolling,omitempty"`
}

// settledAssignment reports whether every slot's current process holds partitions and together
// they hold each of parts exactly once.
func settledAssignment(slots []*slot, parts int) bool {
	seen := map[int32]int{}
	for _, s := range slots {
		ss := readSnaps(s.cur().stats)
		if len(ss) == 0 || len(ss[len(ss)-1].Partitions) == 0 {
			return false
		}
		for _, p := range ss[len(ss)-1].Partitions {
			seen[p]++
		}
	}
	if len(seen) != parts {
		return false
	}
	for _, n := range seen {
		if n != 1 {
			return false
		}
	}
	return true
}

// waitUntil polls cond every 100 ms until it holds or timeout.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// rollSlots waits for the group to settle, then restarts the slots one at a time, the i-th at
// i+1 quarters of the run (or as soon as the previous one holds its partitions again).
func rollSlots(o scaleOpts, slots []*slot, t0 time.Time, rr *RollingRun, start func(*slot) error) error {
	if !waitUntil(o.duration+time.Minute, func() bool { return settledAssignment(slots, o.partitions) }) {
		return fmt.Errorf("rolling: the group did not settle (every member holding partitions)")
	}
	rr.settled = time.Now()
	for _, s := range slots {
		if st, err := os.Stat(s.cur().sink); err == nil {
			s.cur().settleOff = st.Size()
		}
	}
	rr.SettledAtS = time.Since(t0).Seconds()
	for i, s := range slots {
		time.Sleep(time.Until(t0.Add(o.duration * time.Duration(i+1) / time.Duration(len(slots)+1)))) // schedule
		rr.RestartsAtS = append(rr.RestartsAtS, time.Since(t0).Seconds())
		old := s.cur()
		old.c.stop(90 * time.Second)
		time.Sleep(o.restartDelay) // the replacement's start-up (a pod's restart), not a synchronisation
		if err := start(s); err != nil {
			return err
		}
		rr.Restarts++
		if !waitUntil(time.Minute, func() bool {
			ss := readSnaps(s.cur().stats)
			return len(ss) > 0 && len(ss[len(ss)-1].Partitions) > 0
		}) {
			return fmt.Errorf("rolling: %s holds no partition a minute after its restart", s.id)
		}
	}
	return nil
}

// analyse counts rebalances from the workers' snapshots and moved partitions from both their
// snapshots (every 100 ms, which may miss a short hold) and their sink logs after the group
// settled (a partition one member processed messages of) (see RollingRun).
func (rr *RollingRun) analyse(slots []*slot) {
	since := rr.settled.UnixMilli()
	owners := map[int32]map[string]bool{}
	for _, s := range slots {
		for k, inc := range s.incs {
			ss := readSnaps(inc.stats)
			if len(ss) == 0 {
				continue
			}
			base, end := assignSnap{Assigns: 1}, ss[len(ss)-1]
			m := RollingMember{InstanceID: s.id, Incarnation: k}
			for _, sn := range ss {
				if inc.initial && sn.T <= since {
					base = sn
					m.Partitions = sn.Partitions
				}
				if !inc.initial && m.Partitions == nil && len(sn.Partitions) > 0 {
					m.Partitions = sn.Partitions
				}
				if sn.Final {
					rr.SkippedFinished += sn.SkippedFinished
					rr.RevokeTimeS += float64(sn.RevokeTimeNs) / 1e9
				}
			}
			for _, sn := range ss {
				if sn.Stop {
					end = sn
					break
				}
				if sn.T < since || sn.Final {
					continue
				}
				for _, p := range sn.Partitions {
					if owners[p] == nil {
						owners[p] = map[string]bool{}
					}
					owners[p][s.id] = true
				}
			}
			if end.Assigns > base.Assigns {
				m.Assigns = end.Assigns - base.Assigns
			}
			if end.Revokes > base.Revokes {
				m.Revokes = end.Revokes - base.Revokes
			}
			rr.Rebalances += m.Assigns + m.Revokes
			rr.Members = append(rr.Members, m)
		}
	}
	for _, s := range slots {
		for _, inc := range s.incs {
			for p := range sinkPartitionsFrom(inc.sink, inc.settleOff) {
				if owners[p] == nil {
					owners[p] = map[string]bool{}
				}
				owners[p][s.id] = true
			}
		}
	}
	for _, o := range owners {
		if len(o) > 1 {
			rr.PartitionsMoved++
		}
	}
}

// scaleSampler samples the group's lag and every slot's RSS every 500 ms.
type scaleSampler struct {
	mu      sync.Mutex
	samples []ScaleSample
	quit    chan struct{}
	done    chan struct{}
}

func startScaleSampler(addr, topic string, parts int, slots []*slot, mu *sync.Mutex, onSample func(ScaleSample)) (*scaleSampler, error) {
	wc, err := watermarkClient(addr)
	if err != nil {
		return nil, err
	}
	s := &scaleSampler{quit: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(s.done)
		defer wc.Close()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			sm := ScaleSample{T: time.Since(start).Seconds(), RSS: make([]int64, len(slots))}
			var hwm int64
			mu.Lock()
			for i, sl := range slots {
				if rss, err := readRSS(sl.cur().c.pid()); err == nil {
					sm.RSS[i] = rss
				}
				for _, inc := range sl.incs {
					if st, err := os.Stat(inc.sink); err == nil {
						sm.Processed += st.Size() / 12
					}
				}
			}
			mu.Unlock()
			ok := true
			for p := range parts {
				_, hi, err := wc.QueryWatermarkOffsets(topic, int32(p), 5000)
				if err != nil {
					ok = false
					break
				}
				hwm += hi
			}
			if ok {
				sm.Lag = hwm - sm.Processed
				s.mu.Lock()
				s.samples = append(s.samples, sm)
				s.mu.Unlock()
				onSample(sm)
			}
			select {
			case <-s.quit:
				return
			case <-t.C:
			}
		}
	}()
	return s, nil
}

func (s *scaleSampler) stop() []ScaleSample {
	close(s.quit)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ScaleSample(nil), s.samples...)
}

// sinkPartitionsFrom returns the partitions of the sink log records from byte offset off on.
func sinkPartitionsFrom(path string, off int64) map[int32]bool {
	b, err := os.ReadFile(path)
	out := map[int32]bool{}
	if err != nil || off > int64(len(b)) {
		return out
	}
	for b = b[off:]; len(b) >= 12; b = b[12:] {
		out[int32(binary.LittleEndian.Uint32(b[:4]))] = true
	}
	return out
}
