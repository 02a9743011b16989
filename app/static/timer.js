// One timer: its facts, its event timeline and its captured stack, kept live.
"use strict";

const section = document.getElementById("timer");
const timerId = section.dataset.timerId;

function renderTimer(timer) {
  section.dataset.state = timer.state;
  const badge = document.getElementById("timer-state");
  badge.textContent = timer.state;
  badge.dataset.state = timer.state;
  TS.setText("f-pid", timer.pid);
  TS.setText("f-scope", timer.scope_id);
  TS.setText("f-signal", TS.signalName(timer.signal));
  TS.setText("f-source", timer.source);
  TS.setText("f-acquired", new Date(timer.acquired_at * 1000).toLocaleString());
  TS.setText("f-deadline", new Date(timer.expiration_time * 1000).toLocaleString());
  TS.setText("f-ended", timer.ended_at ? new Date(timer.ended_at * 1000).toLocaleString() : "–");
  TS.setText("f-reason", timer.end_reason || "–");
}

function renderEvents(events) {
  const items = events.map((event) => {
    const item = TS.el("li", { "data-kind": event.kind });
    item.append(
      TS.el("time", {}, new Date(event.at * 1000).toLocaleTimeString()),
      TS.el("span", { class: "badge", "data-state": event.kind }, event.kind),
    );
    const detail = Object.entries(event.detail || {})
      .map(([key, value]) => key + ": " + (typeof value === "number" && key === "latency"
        ? (value * 1000).toFixed(1) + " ms" : JSON.stringify(value)))
      .join(", ");
    if (detail) item.append(TS.el("span", { class: "detail" }, detail));
    return item;
  });
  document.getElementById("timeline").replaceChildren(...items);
}

async function load() {
  const [timer, events, stack] = await Promise.all([
    fetch(`/timers/${timerId}`, { cache: "no-store" }),
    fetch(`/events?timer_id=${timerId}&limit=1000`, { cache: "no-store" }),
    fetch(`/timers/${timerId}/stack`, { cache: "no-store" }),
  ]);
  if (timer.status === 404) {
    TS.setText("timer-state", "not found");
    return;
  }
  renderTimer(await timer.json());
  renderEvents((await events.json()).items.reverse());
  if (stack.ok) {
    const method = stack.headers.get("X-Stack-Method");
    const seconds = Number(stack.headers.get("X-Stack-Seconds"));
    TS.setText("stack-method", `Captured with ${method} in ${(seconds * 1000).toFixed(0)} ms, before the signal.`);
    TS.setText("stack", await stack.text());
  }
  TS.setText("updated", new Date().toLocaleTimeString());
  document.getElementById("health").dataset.status = "ok";
  document.getElementById("health").textContent = "connected";
}

TS.poll(load, 1000);
