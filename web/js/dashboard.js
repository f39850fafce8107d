/*
 * The dashboard: a live view of the demo producer that `twistd wsserver --demo` runs.
 *   com.example.ticker  args [value]: an integer that grows by 1..10 at random intervals under 1 s
 *   com.example.clock   args [iso_time_string]: once per second
 * The ticker is subscribed with { resume: true } (see wsclient.js): after a dropped connection the
 * values published meanwhile are drawn first, and the card says "resumed, N missed events
 * recovered"; when they cannot all be had (the server restarted, or more was missed than it keeps)
 * it says "reloaded" and the sparkline starts over, since its line would have a hidden gap.
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
  tickerResume: $("ticker-resume"),
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

/** After a reconnect: what the ticker card says, and a fresh sparkline if values are missing. */
function showTickerResume({ recovered, missed, reason }) {
  ui.tickerResume.hidden = false;
  ui.tickerResume.dataset.recovered = String(recovered);
  if (recovered) {
    ui.tickerResume.textContent = `resumed, ${missed} missed event${missed === 1 ? "" : "s"} recovered`;
    ui.tickerResume.title = "";
  } else {
    ui.tickerResume.textContent = "reloaded";
    ui.tickerResume.title = reason || "";
    // the values since the last one shown are lost: keep only what comes from now on
    tickerHistory.splice(0, tickerHistory.length - 1);
    drawSparkline();
  }
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

for (const [topic, handler, options] of [
  [TICKER, showTicker, { resume: true, onResume: showTickerResume }],
  [CLOCK, showClock, {}], // a missed second of the clock is not worth showing late
]) {
  client
    .subscribe(topic, handler, options)
    .catch((error) => showNotice(`cannot subscribe to ${topic}: ${describeError(error)}`));
}
setInterval(refreshAges, 250);
client.open();
