// One timer: its facts, its event timeline and its captured stack, kept live. The
// server rendered them first; this script polls the same details as JSON.
"use strict";

const section = document.getElementById("timer");
const timerId = section.dataset.timerId;
let stackShown = false;

function renderTimer(timer) {
  section.dataset.state = timer.state;
  const badge = document.getElementById("timer-state");
  badge.textContent = timer.state;
  badge.dataset.state = timer.state;
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
