/*
 * The admin page: log in as the server's admin role (ticket or WAMP-CRA), then
 *   - chart the figures the server publishes on wsserver.stats once a second (uPlot, last 5 minutes),
 *   - list the sessions (wamp.session.list, wamp.session.get) with a "disconnect" button
 *     (wamp.session.kill),
 *   - list the topics with retained events or history (wsserver.admin.topics).
 * The server refuses all of it to any other role with wamp.error.not_authorized: the page then
 * says so and logs out. It does not reconnect by itself: a refused login must not be retried.
 */

import { connectionSettings, describeError } from "/js/wsclient.js";

export const STATS_TOPIC = "wsserver.stats";
export const ADMIN_TOPICS = "wsserver.admin.topics";
/** The figures of a stats event the page charts, in the order of its charts. */
export const STATS = ["sessions", "publications_per_s", "deliveries_per_s", "dropped_per_s", "send_buffer_bytes"];
/** Points each chart keeps: 5 minutes of one stats event a second. */
export const WINDOW = 300;
/** Sessions the table shows at most (each costs a wamp.session.get per refresh). */
export const SESSIONS_SHOWN = 200;
const REFRESH_MS = 2000;
const KILL_REASON = "wsserver.admin.disconnected";

const settings = connectionSettings();
const element = (id) => document.getElementById(id);

let connection = null;
let session = null;
let refreshTimer = null;
/** The x values (seconds) shared by every chart, and per figure its y values and its uPlot. */
const times = [];
const charts = new Map();

element("endpoint").textContent = `${settings.url} · realm ${settings.realm}`;
element("login").addEventListener("submit", (event) => {
  event.preventDefault();
  logIn(element("authid").value, element("password").value, element("authmethod").value);
});
element("log-out").addEventListener("click", () => logOut("logged out"));

export function logIn(authid, password, authmethod) {
  logOut(null);
  showRefusal(null);
  setState("connecting", `as ${authid} (${authmethod})`);
  connection = new autobahn.Connection({
    url: settings.url,
    realm: settings.realm,
    authmethods: [authmethod],
    authid,
    onchallenge: (_session, method, extra) => answerChallenge(method, extra, password),
    serializers: [new autobahn.serializer.JSONSerializer()],
    max_retries: 0,
    retry_if_unreachable: false,
  });
  const mine = connection;
  connection.onopen = (opened, details) => {
    if (mine === connection) joined(opened, details);
  };
  connection.onclose = (reason, details) => {
    if (mine === connection) closed(reason, details || {});
    return true; // no retry: see the top of this file
  };
  connection.open();
}

function answerChallenge(method, extra, password) {
  if (method === "ticket") return password;
  if (method === "wampcra") {
    const key = extra.salt
      ? autobahn.auth_cra.derive_key(password, extra.salt, extra.iterations, extra.keylen)
      : password;
    return autobahn.auth_cra.sign(key, extra.challenge);
  }
  throw new Error(`cannot answer a ${method} challenge`);
}

async function joined(opened, details) {
  session = opened;
  setState("open", `session ${opened.id} as ${details.authid}, role ${details.authrole}`);
  element("log-out").hidden = false;
  try {
    await opened.subscribe(STATS_TOPIC, (args, kwargs) => showStats(kwargs));
  } catch (error) {
    refused(error, details.authrole);
    return;
  }
  element("admin").hidden = false;
  makeCharts();
  clearCharts(); // a new login starts a new window
  refresh();
}

/** The server said no: say why, and log out (nothing on this page works for this role). */
function refused(error, authrole) {
  const why = describeError(error);
  const noAdmin = /none is configured/.test(why);
  showRefusal(noAdmin
    ? `Not authorized: this server has no admin role (${why}).`
    : `Not authorized: role ${authrole} is not the admin role (${why}).`);
  logOut("not authorized");
}

function closed(reason, details) {
  session = null;
  connection = null;
  stopRefreshing();
  element("log-out").hidden = true;
  const wampReason = details.reason ? ` (${details.reason}${details.message ? ": " + details.message : ""})` : "";
  setState("closed", `${reason === "lost" ? "connection lost" : reason}${wampReason}`);
  if (details.reason === "wamp.error.not_authorized") {
    showRefusal(`Login refused: ${details.message || "authentication failed"}.`);
  } else if (details.reason === "wamp.error.no_auth_method") {
    showRefusal("This server has no logins for that method: configure an admin principal in --config (see the README).");
  }
}

export function logOut(why) {
  stopRefreshing();
  const open = connection;
  connection = null;
  session = null;
  element("admin").hidden = true;
  element("log-out").hidden = true;
  if (open) {
    try {
      open.close("wamp.close.normal", "logged out");
    } catch (alreadyClosed) {
      // nothing to close: that is what we want
    }
    if (why) setState("closed", why);
  }
}

function setState(state, detail) {
  element("state").textContent = state;
  element("state").dataset.state = state;
  element("state-reason").textContent = detail;
}

function showRefusal(text) {
  element("refusal").hidden = !text;
  element("refusal").textContent = text || "";
}

// -- charts ---------------------------------------------------------------------------------------

function makeCharts() {
  if (charts.size) return;
  for (const figure of document.querySelectorAll(".chart")) {
    const stat = figure.dataset.stat;
    const ys = [];
    const plot = new uPlot({
      ...chartSize(figure),
      legend: { show: false },
      scales: { x: { time: true } },
      series: [{}, {
        label: stat, stroke: "#2457c5", width: 2, fill: "rgba(36, 87, 197, 0.08)", spanGaps: false,
        points: { show: false },
      }],
      axes: [{}, { size: 70 }],
    }, [times, ys], figure);
    new ResizeObserver(() => plot.setSize(chartSize(figure))).observe(figure);
    charts.set(stat, { ys, plot });
  }
}

function clearCharts() {
  times.length = 0;
  for (const chart of charts.values()) {
    chart.ys.length = 0;
    chart.plot.setData([times, chart.ys]);
  }
}

function chartSize(figure) {
  const padding = 16;
  return { width: Math.max(200, figure.clientWidth - padding), height: 140 };
}

/** One stats event: a point on every chart (null: not counted, drawn as a gap) and the numbers. */
export function showStats(stats) {
  times.push(stats.time);
  for (const stat of STATS) {
    const value = stats[stat] ?? null;
    element(`stat-${stat}`).textContent = formatted(stat, value);
    const chart = charts.get(stat);
    if (chart) chart.ys.push(value);
  }
  while (times.length > WINDOW) {
    times.shift();
    for (const chart of charts.values()) chart.ys.shift();
  }
  for (const chart of charts.values()) chart.plot.setData([times, chart.ys]);
}

function formatted(stat, value) {
  if (value === null) return "not counted";
  return stat.endsWith("_per_s") ? value.toFixed(1) : String(Math.round(value));
}

// -- sessions and topics ----------------------------------------------------------------------------

function stopRefreshing() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
}

async function refresh() {
  const current = session;
  if (!current) return;
  try {
    await Promise.all([showSessions(current), showTopics(current)]);
  } catch (error) {
    if (current === session) showRefusal(`Refresh failed: ${describeError(error)}`);
  }
  if (current === session) refreshTimer = setTimeout(refresh, REFRESH_MS);
}

async function showSessions(current) {
  const ids = await current.call("wamp.session.list");
  const shown = ids.slice(0, SESSIONS_SHOWN);
  // A session may leave between list and get: it is simply not shown.
  const details = await Promise.all(shown.map((id) => current.call("wamp.session.get", [id]).catch(() => null)));
  element("sessions-count").textContent = ids.length > shown.length ? `(${shown.length} of ${ids.length})` : `(${ids.length})`;
  const rows = details.filter(Boolean).map((detail) => sessionRow(detail, detail.session === current.id));
  element("sessions").tBodies[0].replaceChildren(...rows);
}

function sessionRow(detail, isSelf) {
  const row = document.createElement("tr");
  row.dataset.session = detail.session;
  row.dataset.authid = detail.authid;
  row.classList.toggle("self", isSelf);
  const cells = [detail.session, detail.authid, detail.authrole, detail.transport ?? "–", detail.address ?? "–",
    detail.subscriptions, detail.buffered_bytes];
  cells.forEach((value, index) => {
    const cell = row.insertCell();
    cell.textContent = String(value);
    if (index >= 5) cell.className = "number";
  });
  const action = row.insertCell();
  if (isSelf) {
    action.textContent = "this page";
  } else {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "disconnect secondary";
    button.textContent = "disconnect";
    button.addEventListener("click", () => disconnect(detail, button));
    action.append(button);
  }
  return row;
}

async function disconnect(detail, button) {
  button.disabled = true;
  try {
    await session.call("wamp.session.kill", [detail.session], { reason: KILL_REASON, message: "disconnected by an administrator" });
    button.textContent = "disconnected";
  } catch (error) {
    button.disabled = false;
    showRefusal(`Could not disconnect session ${detail.session}: ${describeError(error)}`);
  }
}

async function showTopics(current) {
  const result = await current.call(ADMIN_TOPICS);
  const { topics, total } = result.kwargs || result;
  element("topics-count").textContent = topics.length < total ? `(${topics.length} of ${total})` : `(${total})`;
  const rows = topics.map((topic) => {
    const row = document.createElement("tr");
    row.dataset.topic = topic.topic;
    const position = topic.epoch ? `${topic.epoch}:${topic.position}` : "–";
    [topic.topic, topic.retained ? "yes" : "no", topic.history, position].forEach((value, index) => {
      const cell = row.insertCell();
      cell.textContent = String(value);
      if (index === 2) cell.className = "number";
    });
    return row;
  });
  element("topics").tBodies[0].replaceChildren(...rows);
}
