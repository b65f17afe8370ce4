package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// readRSS returns VmRSS of pid in bytes.
func readRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fs := strings.Fields(rest)
			if len(fs) < 1 {
				break
			}
			kb, err := strconv.ParseInt(fs[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// Sampler samples a process's RSS every interval until Stop.
type Sampler struct {
	mu      sync.Mutex
	samples []Sample
	stop    chan struct{}
	done    chan struct{}
}

// StartSampler samples pid every interval; progress (may be nil) is read at each sample;
// onSample (may be nil) sees each sample.
func StartSampler(pid int, interval time.Duration, progress func() int64, onSample func(Sample)) *Sampler {
	s := &Sampler{stop: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			rss, err := readRSS(pid)
			if err == nil {
				sm := Sample{T: time.Since(start).Seconds(), RSS: rss}
				if progress != nil {
					sm.Processed = progress()
				}
				s.mu.Lock()
				s.samples = append(s.samples, sm)
				s.mu.Unlock()
				if onSample != nil {
					onSample(sm)
				}
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the samples.
func (s *Sampler) Stop() []Sample {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sample(nil), s.samples...)
}

func peakRSS(ss []Sample) int64 {
	var m int64
	for _, s := range ss {
		m = max(m, s.RSS)
	}
	return m
}

// slope is the least-squares slope of y over x.
func slope(x, y []float64) float64 {
	n := float64(len(x))
	if len(x) < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// rssSlopeSecondHalf fits RSS over the second half of the run (by time).
func rssSlopeSecondHalf(ss []Sample) float64 {
	if len(ss) < 2 {
		return 0
	}
	half := ss[len(ss)-1].T / 2
	var x, y []float64
	for _, s := range ss {
		if s.T >= half {
			x = append(x, s.T)
			y = append(y, float64(s.RSS))
		}
	}
	return slope(x, y)
}
