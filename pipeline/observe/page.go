package observe

// pipelinePage draws /debug/pipeline.json, refreshed every second: a summary (sizes as the
// JSON's *_text fields give them), paused partitions, stalled calls, the pipeline as boxes
// and arrows, and one inline SVG chart per history series. Self-contained: no external assets.
const pipelinePage = `<!doctype html>
<html><head><meta charset="utf-8"><title>sluice pipeline</title>
<style>
body{font:14px system-ui,sans-serif;margin:20px;background:#fafafa;color:#222}
#graph{display:flex;align-items:center;flex-wrap:wrap;gap:0}
.node{border:2px solid #678;border-radius:8px;background:#fff;padding:8px 10px;min-width:150px}
.node h3{margin:0 0 4px;font-size:15px}
.k{color:#666;font-size:12px}
.bar{height:8px;background:#eee;border-radius:4px;margin:3px 0}
.bar>div{height:8px;border-radius:4px;background:#4a8}
.arrow{font-size:28px;color:#678;padding:0 6px}
.bottleneck{border-color:#c22;background:#fee;box-shadow:0 0 8px #c22}
.stalled{color:#c22}
#summary{margin:12px 0;color:#444}
#charts{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.chart{background:#fff;border:1px solid #ccd;border-radius:6px;padding:6px 8px}
.chart svg{display:block;background:#f4f6f8}
.chart polyline{fill:none;stroke:#37a;stroke-width:1.5}
</style></head><body>
<h2 id="title">sluice pipeline</h2>
<div id="summary">loading…</div>
<div id="paused" class="k"></div>
<div id="stalls" class="stalled"></div>
<div id="graph"></div>
<div id="charts"></div>
<p class="k">Throughput in messages/s over the last sample; queue = the stage's input edge; busy = share of its workers' time in user code. The red box limits throughput (the source when no queue is backed up). Charts: the last minutes, one point per sample.</p>
<script>
var SVGNS='http://www.w3.org/2000/svg';
function pct(x){return (100*x).toFixed(0)+'%'}
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;if(text!==undefined)e.textContent=text;return e}
function bar(frac){var b=el('div','bar'),i=el('div');i.style.width=Math.min(100,100*frac)+'%';b.appendChild(i);return b}
function chart(s){
  var W=280,H=70,box=el('div','chart');box.setAttribute('data-chart',s.name);
  box.appendChild(el('div','',s.title+': '+s.last_text));
  var svg=document.createElementNS(SVGNS,'svg');svg.setAttribute('width',W);svg.setAttribute('height',H);
  var vals=s.values||[],hi=0;vals.forEach(function(x){if(x>hi)hi=x});
  var pts=vals.map(function(x,i){var px=vals.length>1?i*W/(vals.length-1):0;var py=H-2-(hi>0?x/hi*(H-4):0);return px.toFixed(1)+','+py.toFixed(1)});
  var pl=document.createElementNS(SVGNS,'polyline');pl.setAttribute('points',pts.join(' '));svg.appendChild(pl);
  box.setAttribute('data-points',vals.length);
  box.appendChild(svg);box.appendChild(el('div','k','max '+s.max_text));
  return box;
}
function draw(v){
  document.getElementById('title').textContent='sluice pipeline: '+v.name;
  var sum='in flight '+v.inflight_text+' / '+v.budget_text+' (high water '+v.high_water_text+'), RSS '+v.rss_text;
  if(v.memory_budget_bytes>0)sum+=', memory budget '+v.memory_budget_text;
  document.getElementById('summary').textContent=sum+', bottleneck: '+(v.bottleneck||'source');
  var pp=v.source.paused_partitions||[];
  document.getElementById('paused').textContent=pp.length?'paused partitions: '+pp.join(', '):'';
  var st=document.getElementById('stalls');st.textContent='';
  (v.stalled||[]).forEach(function(c){st.appendChild(el('div','stall','stalled: '+c.stage+' at '+c.topic+'['+c.partition+']@'+c.offset+' for '+c.seconds.toFixed(0)+' s'))});
  var g=document.getElementById('graph');g.textContent='';
  var s=el('div','node source'+(v.bottleneck?'':' bottleneck'));s.setAttribute('data-source','1');
  s.appendChild(el('h3','', 'source'));
  s.appendChild(el('div','',v.source.rate.toFixed(0)+' ev/s'));
  if(v.source.present)s.appendChild(el('div','k','partitions '+v.source.assigned+', paused '+v.source.paused+', lag '+v.source.lag));
  g.appendChild(s);
  (v.stages||[]).forEach(function(st){
    g.appendChild(el('div','arrow','\u2192'));
    var n=el('div','node stage'+(st.bottleneck?' bottleneck':''));n.setAttribute('data-stage',st.name);
    n.appendChild(el('h3','',st.name));
    n.appendChild(el('div','k',st.kind+' \u00d7'+st.concurrency));
    n.appendChild(el('div','',st.in_rate.toFixed(0)+' in/s \u2192 '+st.out_rate.toFixed(0)+' out/s'));
    n.appendChild(el('div','k','queue '+st.queue_len+'/'+st.queue_cap));n.appendChild(bar(st.queue_cap?st.queue_len/st.queue_cap:0));
    n.appendChild(el('div','k','busy '+pct(st.busy)));n.appendChild(bar(st.busy));
    if(st.stalled_calls>0)n.appendChild(el('div','stalled',st.stalled_calls+' stalled'));
    g.appendChild(n);
  });
  var c=document.getElementById('charts');c.textContent='';
  ((v.history&&v.history.series)||[]).forEach(function(s){c.appendChild(chart(s))});
  document.body.setAttribute('data-ready','1');
}
function tick(){fetch('pipeline.json',{cache:'no-store'}).then(function(r){return r.json()}).then(draw)
  .catch(function(e){document.getElementById('summary').textContent='error: '+e})}
tick();setInterval(tick,1000);
</script></body></html>
`
