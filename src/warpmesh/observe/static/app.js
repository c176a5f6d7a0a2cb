// The warpmesh dashboard page: live over server-sent events (/api/live), older task-stream pages
// fetched from the server (/api/stream), a job's detail from /api/job/ID. No build step, no CDN.
"use strict";
const $ = (id) => document.getElementById(id);
let paging = null;  // null: the live first page; else the "before" cursor of the page shown
let pages = [];     // cursors of the pages walked back through

function text(v) { return v === null || v === undefined ? "" : String(v); }
let serverNow = 0;  // the server's clock in the newest summary: runs show "N s ago" against it
function fmtAgo(t) { return t === null || t === undefined ? "" : Math.max(0, serverNow - t).toFixed(1) + " s ago"; }
function fmtDur(d) {
  if (d === null || d === undefined) return "";
  if (d < 0.001) return (d * 1e6).toFixed(0) + " µs";
  return d < 1 ? (d * 1000).toFixed(1) + " ms" : d.toFixed(2) + " s";
}
function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = text(value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function fill(tbody, rows, build) {
  const frag = document.createDocumentFragment();
  for (const r of rows) frag.appendChild(build(r));
  tbody.replaceChildren(frag);
}

function renderPeers(peers) {
  fill(document.querySelector("#peers tbody"), peers, (p) => {
    const tr = document.createElement("tr");
    tr.dataset.peer = p.peer;
    tr.dataset.state = p.state;
    cell(tr, p.peer);
    cell(tr, p.role);
    cell(tr, p.state, "state-" + p.state);
    cell(tr, p.role === "worker" ? (100 * p.ring_share).toFixed(1) + "%" : "");
    cell(tr, p.executions);
    cell(tr, p.running);
    cell(tr, p.lag ? (p.lag.batches ? p.lag.batches + " (" + (1000 * p.lag.seconds).toFixed(0) + " ms)" : "0") : "");
    return tr;
  });
}

function renderStream(page) {
  $("stream-total").textContent = "(" + page.total + " runs, newest " + page.held + " kept)";
  fill(document.querySelector("#stream tbody"), page.runs, (r) => {
    const tr = document.createElement("tr");
    tr.dataset.job = r.job;
    cell(tr, r.n);
    const j = cell(tr, r.job, "job");
    j.onclick = () => showJob(r.job);
    cell(tr, r.op);
    cell(tr, r.peer);
    cell(tr, r.restored ? "restored" : fmtAgo(r.end));
    cell(tr, fmtDur(r.duration));
    const marks = cell(tr, "");
    for (const [on, cls, label] of [[!r.ok, "fail", "failed"], [r.duplicate, "dup", "duplicate"], [r.stolen, "stolen", "stolen"]]) {
      if (!on) continue;
      const s = document.createElement("span");
      s.className = "mark " + cls;
      s.textContent = label;
      marks.appendChild(s);
    }
    return tr;
  });
  $("older").disabled = page.next === null;
  $("older").dataset.next = page.next === null ? "" : page.next;
}

function renderChart(series) {
  const c = $("chart");
  c.width = c.clientWidth || 560;
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (series.length < 2) return;
  const draw = (key, colour) => {
    const max = Math.max(1, ...series.map((p) => p[key]));
    g.strokeStyle = colour;
    g.lineWidth = 2;
    g.beginPath();
    series.forEach((p, i) => {
      const x = (i / (series.length - 1)) * (c.width - 10) + 5;
      const y = c.height - 5 - (p[key] / max) * (c.height - 20);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
    g.fillStyle = colour;
    g.fillText(key + " max " + max, 6, key === "queue" ? 12 : 24);
  };
  draw("queue", "#2457b3");
  draw("rate", "#2e9d5b");
}

function renderRaft(raft) {
  fill(document.querySelector("#raft tbody"), Object.entries(raft), ([node, r]) => {
    const tr = document.createElement("tr");
    cell(tr, node); cell(tr, r.role); cell(tr, r.leader); cell(tr, r.term); cell(tr, r.commit);
    return tr;
  });
}

function render(s) {
  serverNow = s.at;
  document.title = s.title;
  $("title").textContent = s.title;
  $("jobs-finished").textContent = s.jobs.finished;
  $("jobs-failed").textContent = s.jobs.failed;
  $("jobs-running").textContent = s.jobs.running;
  $("queue-depth").textContent = s.jobs.queue_depth;
  $("rate").textContent = s.series.length ? Number(s.series[s.series.length - 1].rate).toFixed(1) : "0";
  $("duplicates").textContent = s.jobs.duplicates;
  $("stolen").textContent = s.jobs.stolen;
  $("dropped").textContent = s.counters.events_dropped;
  renderPeers(s.peers);
  renderChart(s.series);
  renderRaft(s.raft);
  const iso = s.isolates;
  $("isolates").textContent = "memo hits " + iso.memo_hits + ", misses " + iso.memo_misses +
    (iso.memo_hit_rate === null ? "" : " (hit rate " + (100 * iso.memo_hit_rate).toFixed(1) + "%)") +
    ", runs in flight " + iso.running;
  if (paging === null) renderStream(s.stream);
}

async function showJob(job) {
  const r = await fetch("/api/job/" + encodeURIComponent(job));
  $("job").textContent = r.ok ? JSON.stringify(await r.json(), null, 2) : await r.text();
}

async function page(before) {
  const r = await fetch("/api/stream?limit=20&before=" + before);
  if (r.ok) renderStream(await r.json());
}

$("older").onclick = () => {
  const next = $("older").dataset.next;
  if (!next) return;
  pages.push(next);
  paging = next;
  $("newer").disabled = false;
  $("page-note").textContent = "paused on older runs";
  page(next);
};
$("newer").onclick = () => {
  paging = null;
  pages = [];
  $("newer").disabled = true;
  $("page-note").textContent = "live";
};

function connect() {
  const es = new EventSource("/api/live");
  es.addEventListener("summary", (m) => {
    $("conn").textContent = "live";
    $("conn").className = "badge on";
    render(JSON.parse(m.data));
  });
  es.onerror = () => {
    $("conn").textContent = "reconnecting";
    $("conn").className = "badge off";
  };
}
connect();
