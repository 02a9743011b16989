// Shared helpers for the dashboard pages. Data is only ever written with
// textContent or setAttribute: never innerHTML, so worker strings stay text.
"use strict";

const TS = {
  clockOffset: 0, // server time minus this browser's time, in seconds
  // The prefix the service is served under (its root path, e.g. "/timers" behind a
  // proxy), from the page itself: every fetch and link goes through TS.url.
  root: document.body.dataset.root || "",
  scopeChars: Number(document.body.dataset.scopeChars) || 48,

  url(path) {
    return TS.root + path;
  },

  // Long text cut in its middle, as the server's `middle` filter does: torch's scopes
  // are file paths, whose tail says the most. Counts characters, not UTF-16 units.
  middle(text, limit) {
    const chars = Array.from(String(text));
    const max = limit || TS.scopeChars;
    if (chars.length <= max) return String(text);
    const head = Math.floor((max - 1) / 3);
    return chars.slice(0, head).join("") + "…" + chars.slice(chars.length - (max - 1 - head)).join("");
  },

  serverNow() {
    return Date.now() / 1000 + TS.clockOffset;
  },

  el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  },

  setText(id, text) {
    const node = document.getElementById(id);
    if (node && node.textContent !== String(text)) node.textContent = String(text);
  },

  duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    const h = Math.floor(s / 3600);
    return h + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  },

  // The one way every page writes a time: "2025-05-01 04:21:29 UTC", 24 hours, in UTC,
  // never the browser's locale or zone ("4:21:29 AM" beside a server-rendered UTC time
  // reads as two different instants). Mirrors utc_text in dashboard_text.py.
  formatTime(unix) {
    if (!unix) return "–";
    return new Date(Math.floor(unix) * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  },

  // A time as the server's `when` filter writes it: <time datetime="…Z">formatTime</time>,
  // or a dash for none.
  timeElement(unix) {
    if (!unix) return document.createTextNode("–");
    const iso = new Date(Math.floor(unix) * 1000).toISOString().slice(0, 19) + "Z";
    return TS.el("time", { datetime: iso }, TS.formatTime(unix));
  },

  // Put a time into `node` (a cell), touching the page only when it changes.
  setTime(node, unix) {
    if (!node) return;
    const time = node.querySelector("time");
    const text = TS.formatTime(unix);
    if (time ? time.textContent === text : !unix && node.textContent === text) return;
    node.replaceChildren(TS.timeElement(unix));
  },

  signalName(signal) {
    const names = {
      1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
      8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE",
      14: "SIGALRM", 15: "SIGTERM", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP",
    };
    if (signal <= 0) return "observe only";
    return names[signal] || "signal " + signal;
  },

  showHealth(health) {
    const pill = document.getElementById("health");
    pill.dataset.status = health.status;
    pill.textContent = health.status === "ok" ? "healthy" : health.status + ": " + health.problems.join("; ");
    TS.setTime(document.getElementById("updated"), TS.serverNow());
  },

  showOffline(error) {
    const pill = document.getElementById("health");
    pill.dataset.status = "failing";
    pill.textContent = "service unreachable (" + error + "); retrying";
  },

  // Poll `load` every `ms`, never overlapping, and keep going through errors.
  poll(load, ms) {
    const run = async () => {
      try {
        await load();
      } catch (error) {
        TS.showOffline(error.message || error);
      }
      setTimeout(run, ms);
    };
    run();
  },
};
