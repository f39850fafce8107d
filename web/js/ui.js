/*
 * DOM helpers shared by the demo pages: the connection-state line and the notice list.
 * Each page has <span id="state">, <span id="transport">, <span id="state-reason"> and <ul id="notices">.
 */

import { LONG_POLL, describeClose } from "/js/wsclient.js";

/**
 * Show a WampClient state ('connecting' | 'open' | 'closed') and its detail in #state /
 * #state-reason, and while open the transport in use ("WebSocket" or "long-poll") in #transport.
 */
export function showState(state, detail) {
  const stateElement = document.getElementById("state");
  const reasonElement = document.getElementById("state-reason");
  stateElement.textContent = state;
  stateElement.dataset.state = state;
  document.getElementById("transport").textContent = state === "open" ? detail.transport : "";
  if (state === "closed") {
    reasonElement.textContent = describeClose(detail);
  } else if (state === "open") {
    reasonElement.textContent = `session ${detail.sessionId}` + (detail.protocol ? ` over ${detail.protocol}` : "");
  } else {
    reasonElement.textContent = `to ${detail.url}` + (detail.transport === LONG_POLL ? " (long-poll)" : "");
  }
}

/** Add a time-stamped notice at the top of #notices, keeping the last few. */
export function showNotice(text, keep = 5) {
  const list = document.getElementById("notices");
  const item = document.createElement("li");
  item.className = "notice";
  const time = document.createElement("time");
  time.textContent = clockTime(new Date());
  item.append(time, " ", text);
  list.prepend(item);
  while (list.children.length > keep) list.lastElementChild.remove();
}

/** Local wall-clock time with milliseconds, e.g. 14:03:07.120. */
export function clockTime(date) {
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  const time = [date.getHours(), date.getMinutes(), date.getSeconds()].map((n) => pad(n)).join(":");
  return `${time}.${pad(date.getMilliseconds(), 3)}`;
}

/** "just now", "3.2 s ago", "2 min ago": how long ago a performance.now() timestamp was. */
export function age(since, now = performance.now()) {
  const seconds = (now - since) / 1000;
  if (seconds < 0.5) return "just now";
  if (seconds < 60) return `${seconds.toFixed(1)} s ago`;
  return `${Math.floor(seconds / 60)} min ago`;
}
