package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"sync"
	"time"

	"github.com/sluicehq/sluice/kafka"
)

// membership is a scale worker's group membership options: its static instance id (empty:
// dynamic) and the file its assignment snapshots go to (empty: none).
type membership struct {
	instanceID string
	statsFile  string
}

// assignSnap is one line of a worker's stats file: the source's rebalance counters and its
// assignment at T. Stop marks the snapshot taken on SIGTERM before the pipeline starts to
// drain (so a graceful stop's own revoke is not in it); Final the one after Run returned.
type assignSnap struct {
	T               int64   `json:"t_ms"` // unix milliseconds
	Assigns         uint64  `json:"assigns"`
	Revokes         uint64  `json:"revokes"`
	RevokeTimeNs    int64   `json:"revoke_time_ns"`
	SkippedFinished uint64  `json:"skipped_finished"`
	Partitions      []int32 `json:"partitions"`
	Stop            bool    `json:"stop,omitempty"`
	Final           bool    `json:"final,omitempty"`
}

func snapOf(src *kafka.Source) assignSnap {
	st := src.Stats()
	s := assignSnap{T: time.Now().UnixMilli(), Assigns: st.Assigns, Revokes: st.Revokes,
		RevokeTimeNs: int64(st.RevokeTime), SkippedFinished: st.SkippedFinished, Partitions: []int32{}}
	for _, p := range st.Partitions {
		s.Partitions = append(s.Partitions, p.Partition)
	}
	return s
}

// watch starts writing src's snapshots to m.statsFile every 100 ms and returns the context the
// pipeline runs under: it ends after ctx does, once the Stop snapshot is written. The returned
// stop function (call it after the pipeline's Run returned) writes the Final snapshot and
// waits for the writer goroutine. Without a stats file it returns ctx and a no-op.
func (m membership) watch(ctx context.Context, src *kafka.Source) (context.Context, func(), error) {
	if m.statsFile == "" {
		return ctx, func() {}, nil
	}
	f, err := os.OpenFile(m.statsFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	enc := json.NewEncoder(f) // one Write per line: a reader sees whole lines or a torn last one
	write := func(s assignSnap) {
		mu.Lock()
		_ = enc.Encode(s)
		mu.Unlock()
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		stopped := ctx.Done()
		for {
			select {
			case <-quit:
				return
			case <-stopped:
				s := snapOf(src)
				s.Stop = true
				write(s)
				cancel()
				stopped = nil
			case <-t.C:
				write(snapOf(src))
			}
		}
	}()
	return runCtx, func() {
		close(quit)
		<-done
		cancel()
		s := snapOf(src)
		s.Final = true
		write(s)
		_ = f.Close()
	}, nil
}

// readSnaps reads a stats file; a torn last line (the worker is still writing) is left out.
func readSnaps(path string) []assignSnap {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []assignSnap
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var s assignSnap
		if json.Unmarshal(sc.Bytes(), &s) == nil {
			out = append(out, s)
		}
	}
	return out
}
