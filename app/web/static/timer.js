// One timer: its facts, its event timeline and its captured stack, kept live. The
// server rendered them first; this script polls the same details as JSON.
"use strict";

const section = document.getElementById("timer");
const timerId = section.dataset.timerId;
let stackShown = false;

// "3 of 8 (local rank 1)", as the page's rank_words macro writes it.
function rankWords(timer) {
  if (timer.rank === null || timer.rank === undefined) return "–";
  let words = String(timer.rank);
  if (timer.world_size !== null && timer.world_size !== undefined) words += " of " + timer.world_size;
  if (timer.local_rank !== null && timer.local_rank !== undefined) words += ` (local rank ${timer.local_rank})`;
  return words;
}

// Its job, a link to the job's page; the job id is a string a worker chose: text only.
function renderJob(jobId) {
  const cell = document.getElementById("f-job");
  const link = cell.querySelector("a");
  if (jobId === null || jobId === undefined) {
    if (link || cell.textContent !== "–") cell.replaceChildren("–");
    return;
  }
  if (link && link.textContent === jobId) return;
  const href = TS.url("/ui/jobs/" + encodeURIComponent(jobId));
  cell.replaceChildren(TS.el("a", { class: "job-id", href }, jobId));
}

// The incidents holding its rank (one, but for a race): a link each, redrawn only on change.
function renderIncidents(incidents) {
  const cell = document.getElementById("f-incident");
  const key = incidents.map((incident) => incident.id).join(",");
  if (cell.dataset.incidents === key) return;
  cell.dataset.incidents = key;
  if (!incidents.length) {
    cell.replaceChildren("–");
    return;
  }
  const parts = [];
  incidents.forEach((incident, i) => {
    if (i) parts.push(", ");
    const link = TS.el("a", { class: "incident-link", href: TS.url("/ui/incidents/" + incident.id) });
    link.append("incident opened ", TS.timeElement(incident.opened_at));
    parts.push(link);
  });
  cell.replaceChildren(...parts);
}

function renderTimer(timer) {
  section.dataset.state = timer.state;
  const badge = document.getElementById("timer-state");
  badge.textContent = timer.state;
  badge.dataset.state = timer.state;
  renderJob(timer.job_id);
  TS.setText("f-rank", rankWords(timer));
  TS.setText("f-node", timer.node);
  TS.setText("f-pid", timer.pid);
  TS.setText("f-scope", timer.scope_id);
  TS.setText("f-signal", TS.signalName(timer.signal));
  TS.setText("f-source", timer.source);
  TS.setTime(document.getElementById("f-acquired"), timer.acquired_at);
  TS.setTime(document.getElementById("f-deadline"), timer.expiration_time);
  TS.setTime(document.getElementById("f-ended"), timer.ended_at);
  TS.setText("f-reason", timer.end_reason || "–");
  TS.setText("f-timeout-source", timer.timeout_source || "–");
}

// A worker that outlived its SIGKILL: "true" while the kernel holds it, "exited" after.
function renderUnkillable(unkillable) {
  const note = document.getElementById("unkillable");
  if (!unkillable) {
    delete section.dataset.unkillable;
    note.hidden = true;
    return;
  }
  section.dataset.unkillable = unkillable.mark;
  note.textContent = "Unkillable: " + unkillable.text;
  note.hidden = false;
}

// Each event's detail arrives already in words (`text`), written by the server.
function renderEvents(events, older) {
  const items = events.map((event) => {
    const item = TS.el("li", { "data-kind": event.kind });
    item.append(
      TS.timeElement(event.at),
      TS.el("span", { class: "badge", "data-state": event.kind }, event.kind),
    );
    if (event.text) item.append(TS.el("span", { class: "detail" }, event.text));
    return item;
  });
  document.getElementById("timeline").replaceChildren(...items);
  TS.setText("timeline-note", older ? "(newest events only)" : "");
}

async function loadStack() {
  // A timer has at most one stack and it never changes: fetch it once.
  const response = await fetch(TS.url(`/timers/${timerId}/stack`), { cache: "no-store" });
  if (response.status === 403) {
    // Another user's worker: its stack is private to its owner (docs/security.md).
    const answer = await response.json();
    TS.setText("stack", "Not shown: " + answer.detail);
    stackShown = true;
    return;
  }
  if (!response.ok) throw new Error("stack: HTTP " + response.status);
  TS.setText("stack", await response.text());
  stackShown = true;
}

async function load() {
  const response = await fetch(TS.url(`/dashboard/timers/${timerId}`), { cache: "no-store" });
  if (response.status === 404) {
    TS.setText("timer-state", "not found");
    return;
  }
  if (!response.ok) throw new Error("HTTP " + response.status);
  const details = await response.json();
  TS.clockOffset = details.now - Date.now() / 1000;
  renderTimer(details.timer);
  renderEvents(details.events, details.older_events);
  renderUnkillable(details.unkillable);
  renderIncidents(details.incidents || []);
  TS.setText("stack-title", details.stack_title);
  if (details.stack_note) {
    TS.setText("stack-method", details.stack_note);
    if (!stackShown) await loadStack();
  }
  TS.setTime(document.getElementById("updated"), TS.serverNow());
  const pill = document.getElementById("health");
  pill.dataset.status = "ok";
  pill.textContent = "connected";
}

TS.poll(load, 1000);
