/*
 * The publish & subscribe demo page: subscribe to topics, publish to them, watch the events arrive.
 * All WAMP work goes through wsclient.js; this file only turns its callbacks into DOM.
 */

import { WampClient, connectionSettings, describeError } from "/js/wsclient.js";
import { clockTime, showNotice, showState } from "/js/ui.js";

const MAX_EVENTS_SHOWN = 200;

const $ = (id) => document.getElementById(id);
const ui = {
  endpoint: $("endpoint"),
  subscribeForm: $("subscribe-form"),
  topic: $("topic"),
  resume: $("resume"),
  subscriptions: $("subscriptions"),
  publishForm: $("publish-form"),
  publishTopic: $("publish-topic"),
  publishPayload: $("publish-payload"),
  publishResult: $("publish-result"),
  events: $("events"),
  eventCount: $("event-count"),
  noEvents: $("no-events"),
  clearEvents: $("clear-events"),
};

let eventCount = 0;
let previousEventAt = null; // performance.now() of the previous event, for the "+1.23 s" gaps

// -- subscriptions --------------------------------------------------------------------------------

function showSubscription(topic, status) {
  let item = ui.subscriptions.querySelector(`li[data-topic="${CSS.escape(topic)}"]`);
  if (status === "removed" || status === "failed") {
    // a refused subscription is forgotten by the client; the notice from subscribeTo says why
    if (item) item.remove();
    return;
  }
  if (!item) {
    item = document.createElement("li");
    item.dataset.topic = topic;
    const name = document.createElement("code");
    name.textContent = topic;
    const badge = document.createElement("span");
    badge.className = "status";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "secondary small";
    remove.textContent = "Unsubscribe";
    remove.addEventListener("click", () => client.unsubscribe(topic).catch((e) => showNotice(describeError(e))));
    item.append(name, " ", badge, " ", remove);
    ui.subscriptions.append(item);
  }
  item.dataset.status = status;
  item.querySelector(".status").textContent = status;
}

function subscribeTo(topic, resume = ui.resume.checked) {
  topic = topic.trim();
  if (!topic) return;
  // with resume, wsclient.js says "resumed, N missed events recovered" or "reloaded" as a notice
  client
    .subscribe(topic, showEvent, { resume })
    .catch((error) => showNotice(`cannot subscribe to ${topic}: ${describeError(error)}`));
  if (!ui.publishTopic.value) ui.publishTopic.value = topic;
}

// -- events ---------------------------------------------------------------------------------------

function showEvent({ topic, args, kwargs, recovered }) {
  const now = performance.now();
  const gap = previousEventAt === null ? "first event" : `+${((now - previousEventAt) / 1000).toFixed(2)} s`;
  previousEventAt = now;

  const item = document.createElement("li");
  item.className = "event";
  item.dataset.topic = topic;
  if (recovered) item.dataset.recovered = "true"; // missed while disconnected, delivered on resume
  item.append(
    span("event-topic", topic),
    span("event-time", clockTime(new Date()) + (recovered ? " (recovered)" : "")),
    span("event-gap", gap),
    labelled("args", JSON.stringify(args), "event-args"),
    labelled("kwargs", JSON.stringify(kwargs), "event-kwargs"),
  );
  ui.events.prepend(item);
  while (ui.events.children.length > MAX_EVENTS_SHOWN) ui.events.lastElementChild.remove();

  eventCount += 1;
  ui.eventCount.textContent = String(eventCount);
  ui.noEvents.hidden = true;
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

function labelled(label, json, className) {
  const block = document.createElement("div");
  block.className = className;
  const code = document.createElement("code");
  code.textContent = json;
  block.append(span("label", label), " ", code);
  return block;
}

// -- publishing -----------------------------------------------------------------------------------

/** JSON if the text parses as JSON, otherwise the text itself; empty text publishes no arguments. */
function parsePayload(text) {
  if (text.trim() === "") return [];
  try {
    return [JSON.parse(text)];
  } catch (notJson) {
    return [text];
  }
}

async function publishFromForm() {
  const topic = ui.publishTopic.value.trim();
  const args = parsePayload(ui.publishPayload.value);
  ui.publishResult.textContent = "publishing…";
  ui.publishResult.dataset.status = "pending";
  try {
    // exclude_me: false so that this page receives its own event when it is subscribed
    await client.publish(topic, args, {}, { exclude_me: false });
    ui.publishResult.textContent = `published ${JSON.stringify(args)} to ${topic}`;
    ui.publishResult.dataset.status = "ok";
  } catch (error) {
    ui.publishResult.textContent = `not published: ${describeError(error)}`;
    ui.publishResult.dataset.status = "error";
  }
}

// -- wiring ---------------------------------------------------------------------------------------

const settings = connectionSettings();
ui.endpoint.textContent = `${settings.url} · realm ${settings.realm}`;

const client = new WampClient({
  ...settings,
  onState: showState,
  onNotice: showNotice,
  onSubscription: showSubscription,
});

ui.subscribeForm.addEventListener("submit", (event) => {
  event.preventDefault();
  subscribeTo(ui.topic.value);
  ui.topic.value = "";
});
ui.publishForm.addEventListener("submit", (event) => {
  event.preventDefault();
  publishFromForm();
});
ui.clearEvents.addEventListener("click", () => {
  ui.events.replaceChildren();
  eventCount = 0;
  previousEventAt = null;
  ui.eventCount.textContent = "0";
  ui.noEvents.hidden = false;
});

const query = new URLSearchParams(location.search);
for (const topic of query.getAll("subscribe")) {
  subscribeTo(topic, query.get("resume") === "1");
}
client.open();
