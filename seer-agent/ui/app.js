// seer's live view: the call graph coloured by each service's predicted probability of
// initiating a QoS violation, the QoS at the top, a service's recent channels on click, and
// the episodes (alarms, violations, diagnoses, actions, rollbacks, alerts) as they happen.
// It reads one stream, /api/ui/stream (server-sent events: first the history, the last minutes'
// snapshots in one event; then one snapshot per event, at most a few a second); the snapshot is the agent's per-tick JSON (`seer-agent run --json`) plus
// `threshold`, `qos` and `episodes`. Nothing here fetches anything but the agent itself.
"use strict";

const HISTORY = 600; // snapshots kept per service for the sparklines (5 min at 2 a second)
const SPARKS = [
  ["p", "predicted p"],
  ["latency_p99_us", "latency p99 (us)"],
  ["outstanding", "outstanding"],
  ["requests", "requests / tick"],
  ["rx_queue_bytes", "receive queue (B)"],
  ["accept_backlog", "accept backlog"],
  ["nic_rx_pkts", "NIC packets / tick"],
];
const SVG = "http://www.w3.org/2000/svg";

const state = { last: null, history: new Map(), selected: null, episodes: new Map() };

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// Green under a tenth of the threshold, amber at half, red at or over it; grey without a model.
function colour(p, thr) {
  if (p === null || p === undefined) return "#78909c";
  const x = Math.max(0, Math.min(1, p / thr));
  const mix = (a, b, t) => Math.round(a + (b - a) * t);
  const [g, a, r] = [[46, 125, 50], [249, 168, 37], [198, 40, 40]];
  const [c0, c1, t] = x < 0.5 ? [g, a, x / 0.5] : [a, r, (x - 0.5) / 0.5];
  return `rgb(${mix(c0[0], c1[0], t)},${mix(c0[1], c1[1], t)},${mix(c0[2], c1[2], t)})`;
}

function fmtP(p) {
  return p === null || p === undefined ? "-" : p.toFixed(2);
}

function layout(snap, width, height) {
  // Layers by depth from the front end (top) to the back ends (bottom); calls to other hosts
  // below the deepest layer.
  const layers = new Map();
  for (const s of snap.services) {
    if (!layers.has(s.depth)) layers.set(s.depth, []);
    layers.get(s.depth).push(s.name);
  }
  const remotes = [...new Set((snap.remote_edges || []).map((e) => e[1]))];
  const depths = [...layers.keys()].sort((a, b) => a - b);
  const rows = depths.map((d) => layers.get(d).sort());
  if (remotes.length) rows.push(remotes);
  const pos = new Map();
  const dy = height / (rows.length + 1);
  let minDx = Infinity;
  rows.forEach((row, i) => {
    const dx = width / (row.length + 1);
    minDx = Math.min(minDx, dx);
    row.forEach((name, j) => pos.set(name, { x: dx * (j + 1), y: dy * (i + 1) }));
  });
  return { pos, remotes, minDx };
}

function drawGraph(snap) {
  const svg = document.getElementById("graph");
  const width = svg.clientWidth || 900;
  const height = svg.clientHeight || 500;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const defs = el("defs", {}, svg);
  const m = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
  el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#90a4ae" }, m);
  const thr = snap.threshold || 0.5;
  const { pos, remotes, minDx } = layout(snap, width, height);
  // Nodes narrow where a row is crowded, so they never overlap.
  const W = Math.max(40, Math.min(120, minDx - 6)), H = 34;
  const edge = (a, b, cls) => {
    const p = pos.get(a), q = pos.get(b);
    if (!p || !q) return;
    el("line", { class: cls, x1: p.x, y1: p.y + H / 2, x2: q.x, y2: q.y - H / 2, "data-from": a, "data-to": b }, svg);
  };
  for (const [a, b] of snap.edges) edge(a, b, "edge");
  for (const [a, addr] of snap.remote_edges || []) edge(a, addr, "edge remote");
  let top = null;
  for (const s of snap.services) if (s.p !== null && s.p !== undefined && (!top || s.p > top.p)) top = s;
  for (const s of snap.services) {
    const p = pos.get(s.name);
    const cls = ["node"];
    if (state.selected === s.name) cls.push("selected");
    if (top && top === s && s.p >= thr) cls.push("predicted");
    const g = el("g", { class: cls.join(" "), "data-service": s.name, "data-p": s.p === null || s.p === undefined ? "" : s.p, transform: `translate(${p.x - W / 2},${p.y - H / 2})` }, svg);
    el("rect", { width: W, height: H, fill: colour(s.p, thr) }, g);
    const t = el("text", { x: 8, y: 14 }, g);
    t.textContent = s.name;
    const t2 = el("text", { x: 8, y: 28 }, g);
    t2.textContent = `p ${fmtP(s.p)}  q ${s.outstanding ?? 0}`;
    el("title", {}, g).textContent = `${s.name} (pid ${s.pid}, ports ${(s.ports || []).join(",")})`;
    g.addEventListener("click", () => select(s.name));
  }
  for (const addr of remotes) {
    const p = pos.get(addr);
    const g = el("g", { class: "node remote", "data-remote": addr, transform: `translate(${p.x - W / 2},${p.y - H / 2})` }, svg);
    el("rect", { width: W, height: H }, g);
    el("text", { x: 8, y: 21 }, g).textContent = addr;
  }
}

function drawQos(snap) {
  const q = document.getElementById("qos");
  if (!snap.qos) {
    q.dataset.state = "unknown";
    q.textContent = "QoS: none given (--qos SERVICE:P99_MS, or [qos] in the config)";
    return;
  }
  const { target_ms, p99_ms, violated, front_end } = snap.qos;
  q.dataset.state = violated ? "violated" : "ok";
  const p99 = p99_ms === null || p99_ms === undefined ? "-" : `${p99_ms.toFixed(1)} ms`;
  q.textContent = `QoS ${front_end || ""}: p99 ${p99} against ${target_ms} ms${violated ? ": VIOLATED" : ""}`;
  const model = document.getElementById("model");
  model.textContent = snap.model ? `model ${snap.model}, threshold ${Number(snap.threshold).toFixed(2)}` : "no model: reacting only";
}

function spark(values) {
  const svg = el("svg", { viewBox: "0 0 100 20", preserveAspectRatio: "none" });
  const xs = values.filter((v) => v !== null && v !== undefined && isFinite(v));
  const max = Math.max(1e-9, ...xs);
  const pts = values.map((v, i) => `${(100 * i) / Math.max(1, values.length - 1)},${20 - (18 * (v || 0)) / max - 1}`);
  el("polyline", { points: pts.join(" ") }, svg);
  return svg;
}

function drawDetail() {
  const name = state.selected;
  const body = document.getElementById("detail-body");
  if (!name) return;
  document.getElementById("detail-title").textContent = name;
  const h = state.history.get(name) || [];
  body.replaceChildren();
  for (const [key, label] of SPARKS) {
    const row = document.createElement("div");
    row.className = "spark";
    row.dataset.channel = key;
    const l = document.createElement("span");
    l.textContent = label;
    const last = h.length ? h[h.length - 1][key] : null;
    const b = document.createElement("b");
    b.textContent = last === null || last === undefined ? "-" : key === "p" ? fmtP(last) : Math.round(last);
    row.append(l, spark(h.map((s) => s[key])), b);
    body.appendChild(row);
  }
  // This service's diagnoses, actions, alarms and alerts, newest first.
  const eps = [...state.episodes.values()].filter((e) => e.service === name).reverse();
  const h3 = document.createElement("h3");
  h3.textContent = eps.length ? "its episodes" : "no episodes for this service yet";
  body.appendChild(h3);
  const ul = document.createElement("ul");
  ul.id = "detail-episodes";
  for (const e of eps.slice(0, 10)) {
    const li = document.createElement("li");
    li.dataset.kind = e.kind;
    li.textContent = `${new Date(e.ts_ms).toISOString().slice(11, 19)} ${e.kind}: ${e.text}`;
    ul.appendChild(li);
  }
  body.appendChild(ul);
}

function select(name) {
  state.selected = name;
  state.clicked = true;
  if (state.last) drawGraph(state.last);
  drawDetail();
}

function drawTimeline(snap) {
  for (const e of snap.episodes || []) {
    const key = `${e.ts_ms}|${e.kind}|${e.service}|${e.text}`;
    if (state.episodes.has(key)) continue;
    state.episodes.set(key, e);
    const li = document.createElement("li");
    li.dataset.kind = e.kind;
    li.dataset.service = e.service || "";
    const t = new Date(e.ts_ms).toISOString().slice(11, 23);
    li.textContent = `${t}  ${e.kind.padEnd(9)} ${e.service || "-"}: ${e.text}`;
    const list = document.getElementById("timeline");
    list.insertBefore(li, list.firstChild);
  }
}

// Keeps a snapshot's channels and episodes (older or repeated snapshots are ignored);
// whether it was new.
function remember(snap) {
  if (state.lastTs !== undefined && snap.ts_ms <= state.lastTs) return false;
  state.lastTs = snap.ts_ms;
  for (const s of snap.services) {
    if (!state.history.has(s.name)) state.history.set(s.name, []);
    const h = state.history.get(s.name);
    h.push(s);
    if (h.length > HISTORY) h.shift();
  }
  drawTimeline(snap);
  return true;
}

function draw(snap) {
  state.last = snap;
  // Until someone clicks, show the service the model thinks most likely to break the QoS.
  if (!state.clicked) {
    const ranked = [...snap.services].sort((a, b) => (b.p ?? -1) - (a.p ?? -1));
    state.selected = ranked.length ? ranked[0].name : null;
  }
  drawQos(snap);
  drawGraph(snap);
  drawDetail();
  document.body.dataset.ticks = String((Number(document.body.dataset.ticks) || 0) + 1);
  document.getElementById("source").textContent = `${snap.source || "live"} · tick ${new Date(snap.ts_ms).toISOString().slice(11, 23)} UTC`;
}

function onSnapshot(snap) {
  if (remember(snap)) draw(snap);
}

// The minutes before the page opened (or the recorded range, for `seer-agent ui --db`): the
// stream's first event. The page may already show a newer snapshot (embedded in it): the
// history goes before it.
function onHistory(snaps) {
  const shown = state.last;
  state.history = new Map();
  state.lastTs = undefined;
  for (const snap of snaps) remember(snap);
  if (shown) remember(shown);
  const newest = shown && (!snaps.length || shown.ts_ms >= snaps[snaps.length - 1].ts_ms) ? shown : snaps[snaps.length - 1];
  document.body.dataset.history = String(snaps.length);
  if (newest) draw(newest);
}

function connect() {
  const es = new EventSource("/api/ui/stream");
  const on = (name, f) =>
    es.addEventListener(name, (ev) => {
      try {
        f(JSON.parse(ev.data));
        delete document.body.dataset.error;
      } catch (e) {
        // Said on the page, not only in a console nobody opened.
        document.body.dataset.error = String(e);
        document.getElementById("source").textContent = `cannot draw this ${name}: ${e}`;
      }
    });
  on("tick", onSnapshot);
  on("history", onHistory);
  es.onerror = () => {
    document.getElementById("source").textContent = "disconnected from the agent: retrying";
  };
}

// The history the page came with (root's page only), then the stream.
const embedded = document.getElementById("history");
if (embedded) {
  try {
    onHistory(JSON.parse(embedded.textContent));
  } catch (e) {
    document.body.dataset.error = String(e);
  }
}
connect();
