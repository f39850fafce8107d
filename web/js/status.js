/*
 * The status page: what a backend process last published on a topic (com.example.status, or
 * ?topic=), updated as it publishes again. The backend needs no WAMP library: it POSTs to the
 * server's HTTP API (`--http-api`), as examples/status_publisher.py and the README's curl line do,
 * with `retain: true`, so a page opened later (or back after a dropped connection) is sent the last
 * status at once (a subscription with `get_retained`).
 *
 * Each kwarg of the event is one line of the card; `updated` (an ISO 8601 time, set by the
 * publisher) says when the backend measured it, so "last updated N s ago" is true also of a
 * retained status; without it, the page's own arrival time is used. While the connection is down,
 * the page says so in a banner and greys the values: they may be out of date.
 */

import { WampClient, connectionSettings, describeClose, describeError } from "/js/wsclient.js";
import { showNotice, showState } from "/js/ui.js";

const $ = (id) => document.getElementById(id);
const topic = new URLSearchParams(location.search).get("topic") || "com.example.status";
let updatedAt = null; // Date.now() milliseconds of the status shown
let connected = false;

function text(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function showStatus({ args, kwargs }) {
  const { updated, ...values } = kwargs;
  const lines = Object.entries(values);
  if (args.length) lines.unshift(["status", args.length === 1 ? args[0] : args]);
  $("values").replaceChildren(...lines.flatMap(([name, value]) => {
    const term = document.createElement("dt");
    term.textContent = name;
    const description = document.createElement("dd");
    description.dataset.name = name;
    description.textContent = text(value);
    return [term, description];
  }));
  $("waiting").hidden = true;
  const measured = Date.parse(updated);
  updatedAt = Number.isNaN(measured) ? Date.now() : measured;
  showAge();
  showFreshness();
}

function showAge() {
  if (updatedAt === null) return;
  const seconds = Math.max(0, Math.round((Date.now() - updatedAt) / 1000));
  $("updated").textContent = seconds < 120 ? `${seconds} s ago` : `${Math.floor(seconds / 60)} min ago`;
}

function showFreshness() {
  $("status").dataset.fresh = String(connected && updatedAt !== null);
}

function showConnection(state, detail) {
  showState(state, detail);
  connected = state === "open";
  const banner = $("banner");
  if (state === "closed") {
    banner.textContent = `Connection lost, retrying: ${describeClose(detail)}. The values below may be out of date.`;
    banner.hidden = false;
  } else if (state === "open") {
    banner.hidden = true;
  }
  showFreshness();
}

const settings = connectionSettings();
$("endpoint").textContent = `${settings.url} · realm ${settings.realm}`;
$("topic").textContent = topic;
const client = new WampClient({ ...settings, onState: showConnection, onNotice: showNotice });
client
  .subscribe(topic, showStatus, { retained: true })
  .catch((error) => showNotice(`cannot subscribe to ${topic}: ${describeError(error)}`));
setInterval(showAge, 1000);
client.open();
