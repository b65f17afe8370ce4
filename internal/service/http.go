package service

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type server struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// Handler returns the service's HTTP handler: /metrics, /healthz, /readyz, /debug/pprof/,
// /debug/pipeline and /debug/pipeline.json.
func (m *monitor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(registry(m), promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := m.kafka.Ready(); err != nil {
			http.Error(w, "no partitions assigned", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
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
	return mux
}

func startHTTP(addr string, m *monitor, log *slog.Logger) (*server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &server{srv: &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}, addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http", "err", err)
		}
	}()
	log.Info("http listening", "addr", s.addr, "page", "http://"+s.addr+"/debug/pipeline")
	return s, nil
}

func (s *server) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}

// pipelinePage draws /debug/pipeline.json as boxes and arrows, refreshed every second.
const pipelinePage = `<!doctype html>
<html><head><meta charset="utf-8"><title>sluice pipeline</title>
<style>
body{font:14px system-ui,sans-serif;margin:20px;background:#fafafa;color:#222}
#graph{display:flex;align-items:center;flex-wrap:wrap;gap:0}
.node{border:2px solid #678;border-radius:8px;background:#fff;padding:8px 10px;min-width:150px}
.node h3{margin:0 0 4px;font-size:15px}
.node .k{color:#666;font-size:12px}
.bar{height:8px;background:#eee;border-radius:4px;margin:3px 0}
.bar>div{height:8px;border-radius:4px;background:#4a8}
.arrow{font-size:28px;color:#678;padding:0 6px}
.bottleneck{border-color:#c22;background:#fee;box-shadow:0 0 8px #c22}
#summary{margin:12px 0;color:#444}
</style></head><body>
<h2 id="title">sluice pipeline</h2>
<div id="summary">loading…</div>
<div id="graph"></div>
<p class="k">Throughput in messages/s over the last sample; queue = the stage's input edge; busy = share of its workers' time in user code. The red box limits throughput (the source when no queue is backed up).</p>
<script>
function pct(x){return (100*x).toFixed(0)+'%'}
function mib(n){return (n/1048576).toFixed(1)+' MiB'}
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;if(text!==undefined)e.textContent=text;return e}
function bar(frac){var b=el('div','bar'),i=el('div');i.style.width=Math.min(100,100*frac)+'%';b.appendChild(i);return b}
function draw(v){
  document.getElementById('title').textContent='sluice pipeline: '+v.name;
  document.getElementById('summary').textContent='in flight '+mib(v.inflight_bytes)+' / '+mib(v.budget_bytes)+
    ' (high water '+mib(v.high_water_bytes)+'), RSS '+mib(v.rss_bytes)+', bottleneck: '+(v.bottleneck||'source');
  var g=document.getElementById('graph');g.textContent='';
  var s=el('div','node source'+(v.bottleneck?'':' bottleneck'));s.setAttribute('data-source','kafka');
  s.appendChild(el('h3','', 'source'));
  s.appendChild(el('div','',v.source.rate.toFixed(0)+' ev/s'));
  s.appendChild(el('div','k','partitions '+v.source.assigned+', paused '+v.source.paused+', lag '+v.source.lag));
  g.appendChild(s);
  (v.stages||[]).forEach(function(st){
    g.appendChild(el('div','arrow','\u2192'));
    var n=el('div','node stage'+(st.bottleneck?' bottleneck':''));n.setAttribute('data-stage',st.name);
    n.appendChild(el('h3','',st.name));
    n.appendChild(el('div','k',st.kind+' \u00d7'+st.concurrency));
    n.appendChild(el('div','',st.in_rate.toFixed(0)+' in/s \u2192 '+st.out_rate.toFixed(0)+' out/s'));
    n.appendChild(el('div','k','queue '+st.queue_len+'/'+st.queue_cap));n.appendChild(bar(st.queue_cap?st.queue_len/st.queue_cap:0));
    n.appendChild(el('div','k','busy '+pct(st.busy)));n.appendChild(bar(st.busy));
    g.appendChild(n);
  });
  document.body.setAttribute('data-ready','1');
}
function tick(){fetch('/debug/pipeline.json',{cache:'no-store'}).then(function(r){return r.json()}).then(draw)
  .catch(function(e){document.getElementById('summary').textContent='error: '+e})}
tick();setInterval(tick,1000);
</script></body></html>
`
