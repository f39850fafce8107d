/*
 * The dashboard: a live view of the demo producer that `twistd wsserver --demo` runs.
 *   com.example.ticker  args [value]: an integer that grows by 1..10 at random intervals under 1 s
 *   com.example.clock   args [iso_time_string]: once per second
 */

import { WampClient, connectionSettings, describeError } from "/js/wsclient.js";
import { age, showNotice, showState } from "/js/ui.js";

const TICKER = "com.example.ticker";
const CLOCK = "com.example.clock";
const SPARKLINE_POINTS = 60; // how many recent ticker values the sparkline shows
const DEMO_HINT_AFTER_MS = 5000; // no event this long after joining: the producer is probably off

const $ = (id) => document.getElementById(id);
const ui = {
  endpoint: $("endpoint"),
  demoHint: $("demo-hint"),
  tickerValue: $("ticker-value"),
  tickerAge: $("ticker-age"),
  sparkline: $("ticker-sparkline").querySelector("polyline"),
  clockValue: $("clock-value"),
  clockLocal: $("clock-local"),
  clockAge: $("clock-age"),
};

const tickerHistory = [];
let tickerUpdatedAt = null; // performance.now() of the last event, for "updated 0.4 s ago"
let clockUpdatedAt = null;
let demoHintTimer = null;

function showTicker({ args }) {
  const value = args[0];
  ui.tickerValue.textContent = String(value);
  tickerUpdatedAt = performance.now();
  tickerHistory.push(Number(value));
  if (tickerHistory.length > SPARKLINE_POINTS) tickerHistory.shift();
  drawSparkline();
  eventArrived();
}

function showClock({ args }) {
  const isoTime = String(args[0]);
  ui.clockValue.textContent = isoTime;
  const parsed = new Date(isoTime);
  ui.clockLocal.textContent = isNaN(parsed) ? "–" : parsed.toLocaleTimeString();
  clockUpdatedAt = performance.now();
  eventArrived();
}

/** Scale the recent values into the SVG's 300 x 60 box, oldest on the left. */
function drawSparkline() {
  const { width, height } = ui.sparkline.ownerSVGElement.viewBox.baseVal;
  const low = Math.min(...tickerHistory);
  const high = Math.max(...tickerHistory);
  const span = high - low || 1;
  const step = width / (SPARKLINE_POINTS - 1);
  const offset = width - step * (tickerHistory.length - 1); // the newest value sits at the right edge
  const points = tickerHistory.map((value, index) => {
    const x = offset + step * index;
    const y = height - 2 - ((value - low) / span) * (height - 4); // 2 px margin top and bottom
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  ui.sparkline.setAttribute("points", points.join(" "));
}

function eventArrived() {
  clearTimeout(demoHintTimer);
  ui.demoHint.hidden = true;
}

function refreshAges() {
  const now = performance.now();
  ui.tickerAge.textContent = tickerUpdatedAt === null ? "never" : age(tickerUpdatedAt, now);
  ui.clockAge.textContent = clockUpdatedAt === null ? "never" : age(clockUpdatedAt, now);
}

const settings = connectionSettings();
ui.endpoint.textContent = `${settings.url} · realm ${settings.realm}`;

const client = new WampClient({
  ...settings,
  onState(state, detail) {
    showState(state, detail);
    if (state === "open") {
      // the producer publishes at least once a second; silence after joining means it is not running
      clearTimeout(demoHintTimer);
      demoHintTimer = setTimeout(() => (ui.demoHint.hidden = false), DEMO_HINT_AFTER_MS);
    } else {
      clearTimeout(demoHintTimer);
    }
  },
  onNotice: showNotice,
});

for (const [topic, handler] of [[TICKER, showTicker], [CLOCK, showClock]]) {
  client
    .subscribe(topic, handler)
    .catch((error) => showNotice(`cannot subscribe to ${topic}: ${describeError(error)}`));
}
setInterval(refreshAges, 250);
client.open();
