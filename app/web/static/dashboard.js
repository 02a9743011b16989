// The dashboard: polls /dashboard/state twice a second, ticks countdowns every second.
"use strict";

const POLL_MS = 500;
const FILTERS = ["pid", "scope", "job", "state", "node"];
const filters = new URLSearchParams(location.search);
let killsAtOpen = null;
let lastState = null;

function filterQuery() {
  const query = new URLSearchParams();
  for (const name of FILTERS) {
    if (filters.get(name)) query.set(name, filters.get(name));
  }
  return query.toString();
}

function initFilters() {
  const form = document.getElementById("filters");
  for (const name of FILTERS) form.elements[name].value = filters.get(name) || "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) filters.set(name, value);
      else filters.delete(name);
    }
    const query = filterQuery();
    history.replaceState(null, "", query ? "?" + query : location.pathname);
    refresh();
  });
  document.getElementById("clear-filters").addEventListener("click", () => {
    form.reset();
    form.requestSubmit();
  });
}

// The node a timer runs on: a name its service chose, shown as text, whole on hover.
function nodeCell(name) {
  return TS.el("td", { class: "node", title: name }, TS.middle(name, 24));
}

// A timer's job, a link to its page, as the server's job_cell macro draws it.
function jobCell(timer) {
  const cell = TS.el("td", { class: "job" });
  if (timer.job_id === null || timer.job_id === undefined) {
    cell.textContent = "–";
    return cell;
  }
  const href = TS.url("/ui/jobs/" + encodeURIComponent(timer.job_id));
  cell.append(TS.el("a", { href, class: "job-id", title: timer.job_id }, TS.middle(timer.job_id, 24)));
  return cell;
}

// "3/8": rank 3 of a world of 8 (the server's rank_cell).
function rankText(timer) {
  if (timer.rank === null || timer.rank === undefined) return "–";
  const world = timer.world_size;
  return world === null || world === undefined ? String(timer.rank) : `${timer.rank}/${world}`;
}

function scopeLink(timer) {
  // The full scope is in the title (on hover); the text keeps its start and its tail.
  const href = TS.url("/ui/timers/" + timer.id);
  return TS.el("a", { href, class: "scope", title: timer.scope_id }, TS.middle(timer.scope_id));
}

// Reuse rows by timer id, so the page does not flicker and each timer is one element.
// The rows the server rendered are adopted the same way: they carry the same cells.
function syncRows(tbody, timers, build, update) {
  const existing = new Map();
  for (const row of tbody.rows) existing.set(row.dataset.timerId, row);
  const keep = new Set();
  for (const timer of timers) {
    const id = String(timer.id);
    keep.add(id);
    let row = existing.get(id);
    if (!row) {
      row = build(timer);
      row.dataset.timerId = id;
    }
    row.dataset.state = timer.state;
    row.dataset.node = timer.node;
    update(row, timer);
    tbody.appendChild(row); // moves it into sorted order
  }
  for (const [id, row] of existing) if (!keep.has(id)) row.remove();
}

function buildActive(timer) {
  const row = TS.el("tr");
  const left = TS.el("td", { class: "left" });
  left.append(TS.el("span", { class: "countdown" }), TS.el("div", { class: "bar" }));
  left.lastChild.append(TS.el("div", { class: "fill" }));
  const scope = TS.el("td");
  scope.append(scopeLink(timer));
  row.append(left, jobCell(timer), TS.el("td", { class: "rank" }, rankText(timer)), nodeCell(timer.node),
    TS.el("td", {}, timer.pid), scope, TS.el("td", { class: "signal" }), TS.el("td", { class: "held" }),
    TS.el("td", {}, timer.source));
  return row;
}

function updateActive(row, timer) {
  row.timer = timer;
  row.querySelector(".signal").textContent = TS.signalName(timer.signal);
  tickRow(row);
}

function tickRow(row) {
  const timer = row.timer;
  const now = TS.serverNow();
  const left = timer.expiration_time - now;
  const total = Math.max(0.001, timer.expiration_time - timer.acquired_at);
  const used = Math.min(1, Math.max(0, (now - timer.acquired_at) / total));
  row.querySelector(".countdown").textContent = left > 0 ? TS.duration(left) : "due";
  const fill = row.querySelector(".fill");
  fill.style.width = (used * 100).toFixed(1) + "%";
  row.classList.toggle("near", left > 0 && (left < 5 || used > 0.8));
  row.classList.toggle("due", left <= 0);
  row.querySelector(".held").textContent = TS.duration(now - timer.acquired_at);
}

function buildEnded(timer) {
  const row = TS.el("tr");
  const scope = TS.el("td");
  scope.append(scopeLink(timer));
  row.append(TS.el("td", { class: "when" }), TS.el("td"), TS.el("td", { class: "reason" }), jobCell(timer),
    TS.el("td", { class: "rank" }, rankText(timer)), nodeCell(timer.node), TS.el("td", {}, timer.pid), scope,
    TS.el("td", { class: "held" }));
  row.cells[1].append(TS.el("span", { class: "badge" }));
  return row;
}

function updateEnded(row, timer) {
  TS.setTime(row.querySelector(".when"), timer.ended_at);
  const badge = row.cells[1].querySelector(".badge");
  badge.textContent = timer.state;
  badge.dataset.state = timer.state;
  row.querySelector(".reason").textContent = timer.end_reason || "";
  row.querySelector(".held").textContent = TS.duration((timer.ended_at || 0) - timer.acquired_at);
}

// A kill: when, whose (job, rank, node, pid), the timer's page, and how it went.
function buildKill(timer) {
  const row = TS.el("tr");
  const scope = TS.el("td");
  scope.append(scopeLink(timer));
  row.append(TS.el("td", { class: "when" }), jobCell(timer), TS.el("td", { class: "rank" }, rankText(timer)),
    nodeCell(timer.node), TS.el("td", { class: "pid" }, timer.pid), scope, TS.el("td", { class: "reason" }));
  return row;
}

function updateKill(row, timer) {
  TS.setTime(row.querySelector(".when"), timer.ended_at);
  row.querySelector(".reason").textContent = timer.end_reason || "";
}

// The nodes sharing the database: one row a node, kept by name; and the node filter's choices.
function renderNodes(nodes) {
  const tbody = document.querySelector("#nodes-table tbody");
  const existing = new Map();
  for (const row of tbody.rows) existing.set(row.dataset.node, row);
  const keep = new Set();
  for (const node of nodes) {
    keep.add(node.name);
    let row = existing.get(node.name);
    if (!row) {
      row = TS.el("tr");
      row.dataset.node = node.name;
      row.append(TS.el("td", { class: "node", title: node.name }, TS.middle(node.name, 40)),
        TS.el("td"), TS.el("td"), TS.el("td"), TS.el("td"));
      row.cells[1].append(TS.el("span", { class: "badge" }));
    }
    row.dataset.status = node.status;
    const badge = row.cells[1].querySelector(".badge");
    badge.textContent = node.status;
    badge.dataset.status = node.status;
    TS.setTime(row.cells[2], node.last_seen);
    row.cells[3].textContent = node.version;
    row.cells[4].textContent = String(node.active_timers);
    tbody.appendChild(row);
  }
  for (const [name, row] of existing) if (!keep.has(name)) row.remove();
  document.getElementById("nodes-empty").hidden = nodes.length > 0;
  const names = document.getElementById("node-names");
  const wanted = nodes.map((node) => node.name);
  const shown = Array.from(names.options, (option) => option.value);
  if (wanted.join("\n") !== shown.join("\n")) {
    names.replaceChildren(...wanted.map((name) => TS.el("option", { value: name })));
  }
}

// The smallest of 1, 2, 5, 10, 20, 50… that is at least `value`: a round top for the y axis.
function niceCeil(value) {
  let step = 1;
  for (;;) {
    for (const m of [1, 2, 5]) if (m * step >= value) return m * step;
    step *= 10;
  }
}

function drawChart(points) {
  const width = 600, height = 210;
  const pad = { left: 44, right: 14, top: 12, bottom: 32 };
  const plotWidth = width - pad.left - pad.right, base = height - pad.bottom;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "acquisitions, expiries and kills per minute over the last hour");
  const make = (tag, attrs, text) => {
    const node = document.createElementNS(svgNS, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  const most = Math.max(0, ...points.map((p) => Math.max(p.acquired, p.expired, p.killed)));
  const top = niceCeil(Math.max(1, most));
  const y = (v) => base - (v * (base - pad.top)) / top;
  // The y axis: 0, the middle when it is a whole number, and the top, each with a grid line.
  const ticks = top >= 2 && top % 2 === 0 ? [0, top / 2, top] : [0, top];
  for (const tick of ticks) {
    if (tick) make("line", { x1: pad.left, y1: y(tick), x2: width - pad.right, y2: y(tick), class: "grid" });
    make("text", { x: pad.left - 8, y: y(tick) + 5, "text-anchor": "end", class: "axis-label" }, String(tick));
  }
  make("line", { x1: pad.left, y1: base, x2: width - pad.right, y2: base, class: "axis" });
  // The x axis: a tick and a UTC clock time (HH:MM, the chart's title says UTC) at each
  // quarter hour, and "now" at the right. A full time would not fit between two ticks.
  const slot = plotWidth / points.length;
  const hhmm = (unix) => TS.formatTime(unix).slice(11, 16);
  points.forEach((point, i) => {
    if ((point.minute / 60) % 15 !== 0) return;
    const x = pad.left + i * slot;
    make("line", { x1: x, y1: base, x2: x, y2: base + 5, class: "axis" });
    if (i < points.length - 6) {
      const when = hhmm(point.minute);
      make("text", { x, y: height - 8, "text-anchor": "middle", class: "axis-label" }, when);
    }
  });
  make("text", { x: width - pad.right, y: height - 8, "text-anchor": "end", class: "axis-label" }, "now");
  // Three thin bars a minute, side by side: counts stay readable when one series dwarfs another.
  const barWidth = Math.max(1, slot / 3 - 0.5);
  points.forEach((point, i) => {
    ["acquired", "expired", "killed"].forEach((series, k) => {
      if (!point[series]) return;
      const barTop = y(point[series]);
      const bar = make("rect", {
        x: (pad.left + i * slot + k * (slot / 3)).toFixed(1), y: barTop.toFixed(1),
        width: barWidth.toFixed(1), height: (base - barTop).toFixed(1), class: "series " + series,
      });
      const tip = document.createElementNS(svgNS, "title");
      tip.textContent = `${TS.formatTime(point.minute)}: ${point[series]} ${series}`;
      bar.append(tip);
    });
  });
  document.getElementById("chart").replaceChildren(svg);
}

function render(state) {
  TS.clockOffset = state.now - Date.now() / 1000;
  TS.showHealth(state.health);
  document.getElementById("history-unavailable").hidden = !state.history_unavailable;
  TS.setText("history-unavailable-why", state.history_unavailable || "");
  const counts = state.counts;
  TS.setText("count-active", counts.active);
  TS.setText("count-expired", counts.expired_last_hour);
  TS.setText("count-killed", counts.killed_last_hour);
  TS.setText("count-kills-total", counts.kills_total);
  const lag = state.health.reaper_lag_seconds;
  TS.setText("reaper-lag", lag === null ? "–" : (lag * 1000).toFixed(1) + " ms");
  TS.setText("recorder-backlog", state.health.recorder_backlog + " events");
  if (killsAtOpen === null) killsAtOpen = counts.kills_total;
  const killedSinceOpen = counts.kills_total - killsAtOpen;
  const title = (killedSinceOpen > 0 ? `(${killedSinceOpen} killed) ` : "") + "timer-service";
  if (document.title !== title) document.title = title;

  syncRows(document.querySelector("#active-table tbody"), state.active, buildActive, updateActive);
  document.getElementById("active-empty").hidden = state.active.length > 0;
  TS.setText("active-note", state.active_hidden ? `(${state.active_hidden} more not shown)` : "");
  syncRows(document.querySelector("#kills-table tbody"), state.recent_kills, buildKill, updateKill);
  document.getElementById("kills-empty").hidden = state.recent_kills.length > 0;
  // Kills are listed apart: each timer is one element on the page.
  const ends = state.recent_ends.filter((timer) => timer.state !== "killed");
  syncRows(document.querySelector("#ends-table tbody"), ends, buildEnded, updateEnded);
  document.getElementById("ends-empty").hidden = ends.length > 0;
  renderNodes(state.nodes);
  drawChart(state.chart);
}

async function refresh() {
  const response = await fetch(TS.url("/dashboard/state?" + filterQuery()), { cache: "no-store" });
  if (!response.ok) throw new Error("HTTP " + response.status);
  lastState = await response.json();
  render(lastState);
}

initFilters();
TS.poll(refresh, POLL_MS);
setInterval(() => {
  for (const row of document.querySelectorAll("#active-table tbody tr")) if (row.timer) tickRow(row);
}, 1000);
