package observe

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"
)

// Mount registers the Monitor's handlers on mux:
//   - /healthz, liveness: 503 when events are in flight and none completed for the liveness
//     timeout (WithLivenessTimeout, default 2 min: a pipeline stuck in user code, a deadlock),
//     else 200 "ok";
//   - /readyz, readiness: the Source's Ready (503 with its error), 200 "ready" without a Source;
//   - only when debug is true, as they reveal internals: /debug/pipeline (the live page),
//     /debug/pipeline.json (View) and /debug/pprof/.
//
// Use DebugByDefault(addr) for debug unless a flag says otherwise; deployment files keep debug
// off and expose only health, readiness and metrics. Metrics are not mounted here: serve your
// registry (with Collector registered) with promhttp. Mount panics, as http.ServeMux does, if
// a pattern is already registered.
func (m *Monitor) Mount(mux *http.ServeMux, debug bool) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, stuck := m.live(time.Now()); !ok {
			http.Error(w, "stalled: events in flight and none completed for "+stuck.Round(time.Second).String(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s := m.cfg.src; s != nil {
			if err := s.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if !debug {
		return
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pipeline.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(m.View())
	})
	mux.HandleFunc("/debug/pipeline", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(pipelinePage))
	})
}

// live reports whether the pipeline makes progress: nothing in flight, or some event completed
// within the liveness timeout before now (as seen by this or an earlier call, or a sample);
// else how long nothing completed.
func (m *Monitor) live(now time.Time) (ok bool, stuck time.Duration) {
	s := m.p.Stats()
	done := s.Completed + s.Failed
	m.liveMu.Lock()
	defer m.liveMu.Unlock()
	// An emission counts as a move too: the first event after an idle spell nobody observed
	// (no Run, no probe) starts the clock, instead of finding it already expired. A stuck
	// pipeline stops emitting once its budget or edges are full, so it is still caught.
	if done != m.lastDone || s.Emitted != m.lastEmitted || s.InFlightEvents == 0 {
		m.lastDone, m.lastEmitted, m.lastMove = done, s.Emitted, now
		return true, 0
	}
	d := now.Sub(m.lastMove)
	return d <= m.cfg.liveness, d
}

// DebugByDefault reports whether the debug handlers should be on for a server listening on
// addr ("host:port", or a bare host): true only for a loopback address (127.0.0.0/8, ::1,
// localhost). An empty host (":8080", all interfaces) or any other address gives false.
func DebugByDefault(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
