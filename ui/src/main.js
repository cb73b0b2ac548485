// meshctl dashboard's front-end. Every string that comes from the mesh
// (names, versions, NACK reasons, identities, paths) is rendered by
// preact as a text node: nothing here sets innerHTML.
import { h, render } from 'preact';
import { useState, useEffect, useRef, useMemo } from 'preact/hooks';
import htm from 'htm';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './app.css';

const html = htm.bind(h);

// call POSTs to the dashboard's API (the session cookie goes with it).
async function call(name, body) {
  const r = await fetch('/api/' + name, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body || {}),
  });
  let doc;
  try {
    doc = await r.json();
  } catch (e) {
    doc = { error: r.status + ' ' + r.statusText };
  }
  if (!r.ok) throw new Error(doc.error || String(r.status));
  return doc;
}

// usePoll calls fn now and every ms; it returns {data, error, at}.
function usePoll(fn, deps, ms) {
  const [st, setSt] = useState({ data: null, error: null, at: null });
  useEffect(() => {
    let live = true;
    let timer;
    const run = async () => {
      try {
        const data = await fn();
        if (live) setSt({ data, error: null, at: new Date() });
      } catch (e) {
        if (live) setSt((s) => ({ data: s.data, error: e.message, at: s.at }));
      }
      if (live) timer = setTimeout(run, ms || 5000);
    };
    run();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, deps);
  return st;
}

function fmtDur(sec) {
  if (!isFinite(sec)) return '-';
  const neg = sec < 0;
  sec = Math.abs(Math.round(sec));
  const d = Math.floor(sec / 86400), hh = Math.floor((sec % 86400) / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
  let out = d ? `${d}d${hh}h` : hh ? `${hh}h${m}m` : m ? `${m}m${s}s` : `${s}s`;
  return neg ? out + ' ago' : out;
}

function until(ts) {
  if (!ts) return '-';
  const s = (new Date(ts).getTime() - Date.now()) / 1000;
  return s < 0 ? 'expired' : 'in ' + fmtDur(s);
}

function fmtTime(ts) {
  return ts ? new Date(ts).toISOString().replace('.000Z', 'Z') : '-';
}

const pct = (v) => (v == null ? '-' : (100 * v).toFixed(v >= 0.9995 || v === 0 ? 0 : 1) + '%');
const ms = (v) => (v == null ? '-' : (v * 1000 < 10 ? (v * 1000).toFixed(1) : Math.round(v * 1000)) + 'ms');
const rps = (v) => (v == null ? '-' : v.toFixed(v < 10 ? 2 : 1) + ' rps');
const stateName = (s) => (s || '').replace('SYNC_STATE_', '').replace('_', ' ');

function health(rate) {
  if (rate == null) return 'idle';
  if (rate >= 0.99) return 'ok';
  if (rate >= 0.95) return 'warn';
  return 'bad';
}

function Banner({ error }) {
  return error ? html`<p class="error" role="alert">${error}</p>` : null;
}

// ---- Topology ----

const NODE_W = 170, NODE_H = 48, COL_GAP = 150, ROW_GAP = 46, MARGIN = 30;
// OTHER is the caller meshd names when it folds quieter edges into one
// (controlplane/stats.Other).
const OTHER = 'other';
// TALL is the layout height past which the topology scrolls at its own
// scale instead of shrinking to fit (hundreds of callers of one service).
const TALL = 900;

// layout places services in layers (longest path from the callers, at most
// n rounds, so cycles end), one column per layer, sorted by name within
// it: nodes never overlap by construction.
function layout(names, edges) {
  const layer = new Map(names.map((n) => [n, 0]));
  for (let round = 0; round < names.length; round++) {
    let changed = false;
    for (const e of edges) {
      if (e.from === e.to) continue;
      const want = layer.get(e.from) + 1;
      if (want > layer.get(e.to) && want < names.length) {
        layer.set(e.to, want);
        changed = true;
      }
    }
    if (!changed) break;
  }
  const cols = [];
  // By name, but "other" (the folded callers) heads its column, where a
  // tall graph shows it without scrolling.
  const order = (a, b) => (b === OTHER) - (a === OTHER) || (a < b ? -1 : a > b ? 1 : 0);
  for (const n of [...names].sort(order)) {
    const l = layer.get(n);
    (cols[l] = cols[l] || []).push(n);
  }
  const used = cols.filter(Boolean);
  const rows = Math.max(1, ...used.map((c) => c.length));
  const width = Math.max(1100, MARGIN * 2 + used.length * NODE_W + (used.length - 1) * COL_GAP);
  const height = Math.max(320, MARGIN * 2 + rows * NODE_H + (rows - 1) * ROW_GAP + 40);
  const pos = new Map();
  const span = used.length > 1 ? (width - 2 * MARGIN - NODE_W) / (used.length - 1) : 0;
  used.forEach((col, i) => {
    const x = used.length > 1 ? MARGIN + i * span : (width - NODE_W) / 2;
    const total = col.length * NODE_H + (col.length - 1) * ROW_GAP;
    col.forEach((n, j) => pos.set(n, { x, y: (height - total) / 2 + j * (NODE_H + ROW_GAP) }));
  });
  return { pos, width, height };
}

function Lock({ x, y }) {
  return html`<g class="lock" transform=${`translate(${x},${y})`}>
    <title>mTLS</title>
    <path d="M2.5 6 V4 a3.5 3.5 0 0 1 7 0 V6" fill="none" stroke-width="1.6" />
    <rect x="0.5" y="6" width="11" height="8" rx="1.5" />
  </g>`;
}

function nodeHealth(proxies) {
  if (!proxies.length) return 'idle';
  const st = proxies.map((p) => p.state);
  if (st.some((s) => s === 'SYNC_STATE_NACKED' || s === 'SYNC_STATE_UNTRUSTED' || s === 'SYNC_STATE_REVOKED')) return 'bad';
  if (st.some((s) => s !== 'SYNC_STATE_SYNCED')) return 'warn';
  return 'ok';
}

// namespaceOf is the namespace of a SPIFFE ID of the form
// spiffe://td/ns/<ns>/sa/<sa>, '' otherwise.
function namespaceOf(id) {
  const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\//.exec(id || '');
  return m ? m[1] : '';
}

function Topology() {
  const edges = usePoll(() => call('Edges', { windowSeconds: 60 }), [], 5000);
  const proxies = usePoll(() => call('ProxyStatus'), [], 5000);
  const [sel, setSel] = useState(null);
  const model = useMemo(() => {
    // Nodes are "name.namespace": one name in two namespaces is two
    // services (and a caller's service account is named the same way).
    const byService = new Map();
    for (const p of (proxies.data && proxies.data.proxies) || []) {
      const s = `${p.proxy.service}.${namespaceOf(p.proxy.spiffeId)}`;
      if (!byService.has(s)) byService.set(s, []);
      byService.get(s).push(p);
    }
    const es = ((edges.data && edges.data.edges) || []).map((e) => ({ ...e, from: e.source, to: e.destination }));
    for (const e of es) {
      for (const n of [e.from, e.to]) if (!byService.has(n)) byService.set(n, []);
    }
    const names = [...byService.keys()];
    return { names, byService, es, ...layout(names, es) };
  }, [edges.data, proxies.data]);
  const { pos, width, height } = model;
  return html`<section>
    <h2>Topology <small>last ${(edges.data && edges.data.window) || '1m0s'}, refreshed every 5 s</small></h2>
    <${Banner} error=${edges.error || proxies.error} />
    ${edges.data && edges.data.edgesFolded ? html`<p class="hint" data-folded>${edges.data.edgesFolded} quieter edges are drawn as one edge from "other" to each service, to keep meshd's answer under its size bound.</p>` : null}
    <div class=${height > TALL ? 'topo tall' : 'topo'}>
      <svg viewBox=${`0 0 ${width} ${height}`} role="img" aria-label="service topology">
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="14" markerHeight="14" orient="auto-start-reverse">
            <path d="M0 0 L10 5 L0 10 z" class="arrowhead" />
          </marker>
        </defs>
        ${model.es.map((e, i) => {
          const a = pos.get(e.from), b = pos.get(e.to);
          if (!a || !b) return null;
          const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
          const back = x2 <= x1;
          const bend = back ? Math.max(90, NODE_H * 2) : 0;
          const d = back
            ? `M${a.x + NODE_W / 2} ${a.y + NODE_H} C${a.x + NODE_W / 2} ${a.y + NODE_H + bend} ${b.x + NODE_W / 2} ${b.y + NODE_H + bend} ${b.x + NODE_W / 2} ${b.y + NODE_H}`
            : `M${x1} ${y1} C${(x1 + x2) / 2} ${y1} ${(x1 + x2) / 2} ${y2} ${x2} ${y2}`;
          const mx = back ? (a.x + b.x) / 2 + NODE_W / 2 : (x1 + x2) / 2;
          const my = back ? Math.max(a.y, b.y) + NODE_H + bend * 0.75 : (y1 + y2) / 2 - 10 - (i % 2) * 16;
          const key = e.from + '->' + e.to;
          // A folded edge (from "other") says how many edges it holds.
          const label = `${e.folded ? `${e.folded} edges · ` : ''}${rps(e.rps)} · ${pct(e.successRate)} · p99 ${ms(e.p99Seconds)}`;
          const selected = sel && sel.key === key;
          return html`<g class=${`edge ${health(e.requests ? e.successRate : null)}${selected ? ' selected' : ''}`} data-edge=${key} data-rps=${String(e.rps)}
              onClick=${() => setSel({ key, source: e.source, sourceService: e.sourceService, sourceNamespace: e.sourceNamespace, mtls: e.mtls, destinationService: e.destinationService, namespace: e.namespace })}>
            <title>${e.source}${e.folded ? ` (${e.folded} edges)` : ''} → ${e.destination}</title>
            <path class="hit" d=${d} />
            <path class="line" d=${d} marker-end="url(#arrow)" />
            ${e.mtls ? html`<${Lock} x=${mx - 8 - label.length * 3.6} y=${my - 11} />` : null}
            <text class="edge-label" x=${mx + 6} y=${my} text-anchor="middle">${label}</text>
          </g>`;
        })}
        ${model.names.map((n) => {
          const p = pos.get(n);
          const ps = model.byService.get(n);
          const dot = n.lastIndexOf('.');
          const name = dot > 0 ? n.slice(0, dot) : n;
          const ns = dot > 0 ? n.slice(dot + 1) : '';
          return html`<g class=${`node ${nodeHealth(ps)}`} data-node=${n} transform=${`translate(${p.x},${p.y})`}>
            <rect width=${NODE_W} height=${NODE_H} rx="8" />
            <text class="node-name" x=${NODE_W / 2} y="20" text-anchor="middle">${name}</text>
            <text class="node-sub" x=${NODE_W / 2} y="37" text-anchor="middle">${ps.length ? `${ns || '-'} · ${ps.length} prox${ps.length === 1 ? 'y' : 'ies'}` : n === OTHER ? 'quieter callers' : 'no proxy'}</text>
          </g>`;
        })}
      </svg>
    </div>
    ${sel ? html`<${EdgeChart} sel=${sel} onClose=${() => setSel(null)} />` : html`<p class="hint">Click an edge for its last 5 minutes.</p>`}
  </section>`;
}

function EdgeChart({ sel, onClose }) {
  const ref = useRef(null);
  const series = usePoll(() => call('EdgeSeries', { source: sel.source, sourceService: sel.sourceService, sourceNamespace: sel.sourceNamespace, mtls: sel.mtls, destinationService: sel.destinationService, namespace: sel.namespace, windowSeconds: 300 }), [sel.key], 10000);
  // Redraw when the colour scheme changes: the canvas takes its colours
  // from the CSS variables when it draws.
  const [scheme, setScheme] = useState(0);
  useEffect(() => {
    const mq = window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)');
    if (!mq) return undefined;
    const on = () => setScheme((n) => n + 1);
    mq.addEventListener('change', on);
    return () => mq.removeEventListener('change', on);
  }, []);
  useEffect(() => {
    if (!series.data || !ref.current) return;
    const pts = series.data.points;
    const xs = pts.map((p) => new Date(p.end).getTime() / 1000);
    const data = [xs, pts.map((p) => p.rps), pts.map((p) => (p.successRate == null ? null : 100 * p.successRate)), pts.map((p) => (p.p99Seconds == null ? null : 1000 * p.p99Seconds))];
    const css = getComputedStyle(document.documentElement);
    const axis = { stroke: css.getPropertyValue('--fg').trim(), grid: { stroke: css.getPropertyValue('--line').trim() }, ticks: { stroke: css.getPropertyValue('--line').trim() } };
    const plot = new uPlot(
      {
        width: Math.min(1180, ref.current.clientWidth || 1100),
        height: 220,
        series: [{}, { label: 'rps', stroke: '#2f7de1', scale: 'rps' }, { label: 'success %', stroke: '#2f9e5b', scale: '%' }, { label: 'p99 ms', stroke: '#d9822b', scale: 'ms' }],
        axes: [axis, { ...axis, scale: 'rps' }, { ...axis, scale: 'ms', side: 1 }],
        scales: { '%': { range: [0, 100] } },
      },
      data,
      ref.current,
    );
    return () => plot.destroy();
  }, [series.data, scheme]);
  return html`<div class="panel" data-edge-chart=${sel.key}>
    <div class="panel-head"><strong>${sel.source} → ${sel.destinationService}.${sel.namespace}</strong> <span>last 5 minutes, 10 s steps</span>
      <button type="button" onClick=${onClose}>close</button></div>
    <${Banner} error=${series.error} />
    <div ref=${ref} class="chart"></div>
  </div>`;
}

// ---- Proxies ----

const proxyCols = [
  ['instance', 'Instance'],
  ['service', 'Service'],
  ['identity', 'Identity'],
  ['state', 'Sync state'],
  ['acked', 'Config version'],
  ['version', 'Proxy version'],
  ['expires', 'SVID expires'],
  ['lastSeen', 'Last message'],
];

function Proxies() {
  const st = usePoll(() => Promise.all([call('ProxyStatus'), call('CAStatus')]), [], 5000);
  const [filter, setFilter] = useState('');
  const [sort, setSort] = useState({ col: 'service', desc: false });
  const rows = useMemo(() => {
    if (!st.data) return [];
    const notBefore = new Map(st.data[1].proxies.map((p) => [p.instanceId, p.svidNotBefore]));
    return st.data[0].proxies.map((ps) => ({
      instance: ps.proxy.instanceId,
      service: ps.proxy.service,
      identity: ps.proxy.spiffeId,
      state: stateName(ps.state),
      reason: ps.state === 'SYNC_STATE_NACKED' ? ps.nackReason : ps.state === 'SYNC_STATE_UNTRUSTED' ? `SVID root ${ps.svidRoot} not in its bundle` : ps.state === 'SYNC_STATE_UNTRUSTED_PEERS' ? `${ps.untrustedPeers.length} peers it cannot verify` : '',
      acked: ps.ackedVersion,
      version: ps.proxy.version,
      expires: ps.proxy.svidExpiresAt,
      notBefore: notBefore.get(ps.proxy.instanceId),
      lastSeen: ps.lastMessage,
      cls: health(ps.state === 'SYNC_STATE_SYNCED' ? 1 : ps.state === 'SYNC_STATE_STALE' || ps.state === 'SYNC_STATE_DISCONNECTED' ? 0.97 : 0),
    }));
  }, [st.data]);
  const shown = rows
    .filter((r) => !filter || [r.instance, r.service, r.identity, r.state, r.reason, r.version, r.acked].some((v) => (v || '').toLowerCase().includes(filter.toLowerCase())))
    .sort((a, b) => {
      const x = a[sort.col] || '', y = b[sort.col] || '';
      return (x < y ? -1 : x > y ? 1 : 0) * (sort.desc ? -1 : 1);
    });
  return html`<section>
    <h2>Proxies <small>${rows.length} registered</small></h2>
    <${Banner} error=${st.error} />
    <label class="filter">Filter <input type="search" placeholder="service, state, version…" value=${filter} onInput=${(e) => setFilter(e.target.value)} /></label>
    <table class="grid" data-table="proxies">
      <thead><tr>${proxyCols.map(([k, label]) => html`<th><button type="button" class="sort" onClick=${() => setSort({ col: k, desc: sort.col === k ? !sort.desc : false })}>${label}${sort.col === k ? (sort.desc ? ' ▾' : ' ▴') : ''}</button></th>`)}</tr></thead>
      <tbody>
        ${shown.map((r) => html`<tr data-proxy=${r.instance}>
          <td class="mono">${r.instance}</td>
          <td>${r.service}</td>
          <td class="mono small">${r.identity}</td>
          <td><span class=${`badge ${r.cls}`}>${r.state}</span>${r.reason ? html`<div class="reason">${r.reason}</div>` : null}</td>
          <td class="mono small">${r.acked || '-'}</td>
          <td class="mono small" data-version>${r.version || '-'}</td>
          <td><${ExpiryBar} notBefore=${r.notBefore} notAfter=${r.expires} /></td>
          <td class="small">${r.lastSeen ? fmtDur((new Date(r.lastSeen).getTime() - Date.now()) / 1000) : '-'}</td>
        </tr>`)}
      </tbody>
    </table>
  </section>`;
}

function ExpiryBar({ notBefore, notAfter }) {
  if (!notAfter) return '-';
  const end = new Date(notAfter).getTime();
  const start = notBefore ? new Date(notBefore).getTime() : end - 3600e3;
  const total = Math.max(1, end - start), left = Math.max(0, end - Date.now());
  return html`<div class="expiry"><meter min="0" max=${total} low=${total * 0.25} high=${total * 0.5} optimum=${total} value=${left}></meter> <span class="small">${until(notAfter)}</span></div>`;
}

// ---- Certificates ----

function Certificates() {
  const st = usePoll(() => Promise.all([call('CAStatus'), call('ListCertificates', { validOnly: true })]), [], 10000);
  if (!st.data) return html`<section><h2>Certificates</h2><${Banner} error=${st.error} /></section>`;
  const [ca, certs] = st.data;
  const list = (xs) => (xs && xs.length ? xs.join(', ') : '-');
  return html`<section>
    <h2>Certificates</h2>
    <${Banner} error=${st.error} />
    <div class="cards">
      <div class="card"><h3>Rotation</h3>
        <dl>
          <dt>Phase</dt><dd data-ca-phase>${ca.phase}</dd>
          <dt>Waiting for</dt><dd>${ca.waitingFor || 'nothing'}</dd>
          <dt>Waiting on</dt><dd class="mono small">${list(ca.waiting)}</dd>
          <dt>Of them disconnected</dt><dd class="mono small">${list(ca.waitingDisconnected)}</dd>
          <dt>Would break if forced</dt><dd class="mono small">${list(ca.wouldBreak)}</dd>
          <dt>Untrusted now</dt><dd class="mono small">${list(ca.untrusted)}</dd>
          <dt>Stale join tokens</dt><dd>${ca.staleTokens}</dd>
        </dl>
      </div>
      <div class="card"><h3>Roots and intermediate</h3>
        <dl>
          <dt>Active root</dt><dd><span class="mono small">${ca.active ? ca.active.pin : '-'}</span><br />expires ${ca.active ? fmtTime(ca.active.notAfter) : '-'} (${ca.active ? until(ca.active.notAfter) : '-'})</dd>
          <dt>Next root</dt><dd>${ca.next ? html`<span class="mono small">${ca.next.pin}</span><br />expires ${fmtTime(ca.next.notAfter)}` : 'none'}</dd>
          <dt>Retired roots</dt><dd>${ca.retired.length ? ca.retired.map((r) => html`<div class="mono small">${r.pin} (${until(r.notAfter)})</div>`) : 'none'}</dd>
          <dt>Intermediate</dt><dd>expires ${fmtTime(ca.intermediateNotAfter)} (${until(ca.intermediateNotAfter)})</dd>
        </dl>
      </div>
    </div>
    <h3>Valid SVIDs <small>${certs.certificates.length}</small></h3>
    <table class="grid">
      <thead><tr><th>Identity</th><th>Serial</th><th>Issued by</th><th>Instance</th><th>Expires</th></tr></thead>
      <tbody>${certs.certificates.map((c) => html`<tr>
        <td class="mono small">${c.spiffeId}</td><td class="mono small">${c.serial}</td><td>${c.issuedBy}</td>
        <td class="mono small">${c.instanceId || '-'}</td><td><${ExpiryBar} notBefore=${c.notBefore} notAfter=${c.notAfter} /></td></tr>`)}</tbody>
    </table>
  </section>`;
}

// ---- Policy ----

function Policy() {
  const st = usePoll(() => call('Stats', { window: '900s' }), [], 5000);
  const denies = (st.data && st.data.denies) || [];
  return html`<section>
    <h2>Policy</h2>
    <${Banner} error=${st.error} />
    <h3>Recent denies <small>last 15 minutes, newest first</small></h3>
    <table class="grid" data-table="denies">
      <thead><tr><th>Time</th><th>Source identity</th><th>Destination</th><th>Method</th><th>Path</th><th>Policy</th><th>Rule</th></tr></thead>
      <tbody>${denies.length
        ? denies.slice(0, 200).map((d) => html`<tr data-deny>
          <td class="small">${fmtTime(d.time)}</td>
          <td class="mono small" data-source>${d.sourceIdentity || '(outside the mesh)'}</td>
          <td>${d.destinationService}.${d.destinationNamespace}</td>
          <td>${d.method}</td><td class="mono small">${d.path}</td>
          <td data-policy>${d.policy || '(default deny)'}</td><td data-rule>${String(d.rule)}</td></tr>`)
        : html`<tr><td colspan="7">No denies in the window.</td></tr>`}</tbody>
    </table>
    <${Explain} />
  </section>`;
}

function Explain() {
  const [form, setForm] = useState({ from: '', to: '', namespace: 'default', method: 'GET', path: '/' });
  const [res, setRes] = useState(null);
  const [err, setErr] = useState(null);
  const field = (k, label, ph) => html`<label>${label} <input name=${k} value=${form[k]} placeholder=${ph || ''} onInput=${(e) => setForm({ ...form, [k]: e.target.value })} /></label>`;
  const submit = async (e) => {
    e.preventDefault();
    setErr(null);
    try {
      setRes(await call('Explain', form));
    } catch (x) {
      setRes(null);
      setErr(x.message);
    }
  };
  return html`<form class="explain" onSubmit=${submit}>
    <h3>Would this request be allowed? <small>as meshctl authz explain</small></h3>
    <div class="fields">
      ${field('from', 'From', 'spiffe://minimesh.local/ns/default/sa/web')}
      ${field('to', 'To service', 'api')}
      ${field('namespace', 'Namespace')}
      ${field('method', 'Method')}
      ${field('path', 'Path')}
      <button type="submit">Explain</button>
    </div>
    <${Banner} error=${err} />
    ${res ? html`<div class="panel" data-explain>
      <p><span class=${`badge ${res.explanation.allowed ? 'ok' : 'bad'}`} data-decision>${res.explanation.allowed ? 'ALLOWED' : 'DENIED'}</span> ${res.explanation.reason}</p>
      <pre>${res.text}</pre></div>` : null}
  </form>`;
}

// ---- Resources ----

function Resources() {
  const st = usePoll(() => call('Resources'), [], 15000);
  const kinds = (st.data && st.data.kinds) || [];
  return html`<section>
    <h2>Resources <small>read-only${st.data ? `, revision ${st.data.revision}` : ''}</small></h2>
    <${Banner} error=${st.error} />
    ${kinds.length ? kinds.map((k) => html`<details open data-kind=${k.kind}><summary>${k.kind} (${k.count})</summary><pre class="yaml">${k.yaml}</pre></details>`) : html`<p>No resources applied.</p>`}
  </section>`;
}

// ---- App ----

const pages = [
  ['topology', 'Topology', Topology],
  ['proxies', 'Proxies', Proxies],
  ['certificates', 'Certificates', Certificates],
  ['policy', 'Policy', Policy],
  ['resources', 'Resources', Resources],
];

function currentPage() {
  const id = location.hash.replace(/^#\/?/, '');
  return pages.find((p) => p[0] === id) || pages[0];
}

function App() {
  const [page, setPage] = useState(currentPage());
  const version = usePoll(() => call('Version'), [], 30000);
  useEffect(() => {
    const on = () => setPage(currentPage());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  const Page = page[2];
  const v = version.data;
  return html`<div class="app" data-page=${page[0]}>
    <header>
      <h1>minimesh</h1>
      <nav>${pages.map(([id, label]) => html`<a href=${'#/' + id} class=${id === page[0] ? 'active' : ''}>${label}</a>`)}</nav>
      <span class="meta">${v ? `meshd ${v.version || '?'} · ${v.trustDomain} · ${v.store}` : ''}</span>
    </header>
    <main><${Page} /></main>
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
