/*
 * The chat page: rooms, nicknames, who is here, the last messages on entering, and no message lost
 * to a dropped connection; over WebSocket or long-poll alike (wsclient.js chooses).
 *
 * Topics:
 *   com.example.chat.room.<room>      args [{nick, text}]: the room's messages. The server keeps
 *                                     history for them (`--demo` keeps the last 50 of every room,
 *                                     or a `history` rule in --config): the page shows the last
 *                                     messages on entering (wamp.subscription.get_events) and,
 *                                     subscribed with { resume: true }, gets what it missed while
 *                                     its connection was down.
 *   com.example.chat.room.  (prefix)  the room list: it starts with the rooms of the last messages
 *                                     kept (wamp.subscription.get_events on this subscription), and
 *                                     a room appears when someone speaks in it (an event here) or
 *                                     enters it (wamp.subscription.on_create); the other rooms count
 *                                     their unread messages.
 *   com.example.chat.presence.<room>  args [{type: "hello" | "here", session, nick}]: nicknames.
 *
 * Who is here: the router's word, not the pages'. A room's members are the sessions subscribed to
 * its topic, asked for on every (re)connect (wamp.subscription.lookup, then list_subscribers) and
 * kept up to date from the subscription meta events (wamp.subscription.on_subscribe and
 * on_unsubscribe, which the router also sends when a session's connection is lost). So a page
 * that crashes or drops off leaves the list as soon as the router notices, with no heartbeat or
 * timeout of our own. Meta events name sessions, not people (in an open realm everyone is
 * anonymous), so nicknames travel on the presence topic: a page entering says "hello" with its
 * nickname, and each page already there answers "here" to it alone (eligible: [its session]). A
 * subscriber that is no chat page (pubsub.html on a room's topic, say) counts, as "session N".
 * Presence messages are published with disclose_me, and a nickname is taken for the session the
 * router names as publisher, not the one the message claims, so nobody can rename someone else;
 * an undisclosed one is ignored, unless this page's own role may not disclose either (then the
 * claim is all anyone has). A page answers each member's hello once, and nobody else's: a flood
 * of hellos costs it one publication.
 *
 * Whatever users type reaches the page as text (textContent), never as HTML.
 */

import { WampClient, connectionSettings, describeError } from "/js/wsclient.js";
import { clockTime, showNotice, showState } from "/js/ui.js";

export const ROOM_PREFIX = "com.example.chat.room.";
export const PRESENCE_PREFIX = "com.example.chat.presence.";
const ON_CREATE = "wamp.subscription.on_create";
const ON_SUBSCRIBE = "wamp.subscription.on_subscribe";
const ON_UNSUBSCRIBE = "wamp.subscription.on_unsubscribe";
const HISTORY_SHOWN = 50; // messages shown on entering a room (what --demo keeps)
const MESSAGES_KEPT = 500; // older ones leave the page
const ROOMS_FROM_HISTORY = 100; // the last messages of all rooms whose rooms the list starts with
const ROOM_NAME = /^[a-z0-9_-]{1,32}$/;
const NICK_LENGTH = 32;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = ROOM_NAME.test(params.get("room") || "") ? params.get("room") : "lobby";
const roomTopic = ROOM_PREFIX + room;
const presenceTopic = PRESENCE_PREFIX + room;
let nick = cleanNick(params.get("nick") || localStorage.getItem("wsserver.chat.nick") || `guest-${1000 + Math.floor(Math.random() * 9000)}`);

const members = new Set(); // session ids subscribed to the room's topic
const nicks = new Map(); // session id -> nickname, from the presence topic
let roomSubscription = null; // the router's id of the room topic's subscription
let presenceSession = null; // the session whose presence is synced, so it is synced once per connection
const answered = new Set(); // members whose hello this page has answered
let presenceOptions = { disclose_me: true }; // {} once the router refused disclosure
const shown = new Set(); // "epoch:seq" of the messages on the page
const rooms = new Map(); // room name -> its <li> in #rooms

function cleanNick(text) {
  return String(text).trim().slice(0, NICK_LENGTH) || "guest";
}

// -- messages --------------------------------------------------------------------------------------

/** A chat message's nick and text; anything else published on the topic is shown as JSON. */
function chatMessage(payload) {
  if (payload && typeof payload === "object" && typeof payload.text === "string") {
    return { nick: typeof payload.nick === "string" ? cleanNick(payload.nick) : "?", text: payload.text };
  }
  return { nick: "?", text: JSON.stringify(payload) };
}

/**
 * Put one message on the page, in publication order: an event of the room's subscription (live,
 * or recovered after a reconnect), or an entry of its history. A message already shown (the same
 * position) is left out, so history and live events may overlap.
 */
function showMessage({ args, details, recovered = false, fromHistory = false }) {
  const { _epoch: epoch, _seq: seq } = details;
  const positioned = typeof epoch === "string" && Number.isInteger(seq);
  if (positioned) {
    if (shown.has(`${epoch}:${seq}`)) return;
    shown.add(`${epoch}:${seq}`);
  }
  const { nick: from, text } = chatMessage(args[0]);
  const item = document.createElement("li");
  item.className = "message";
  if (positioned) Object.assign(item.dataset, { epoch, seq: String(seq) });
  if (recovered) item.dataset.recovered = "true";
  if (fromHistory) item.dataset.history = "true";
  const time = document.createElement("time");
  time.textContent = clockTime(details.timestamp ? new Date(details.timestamp) : new Date()).slice(0, 8);
  const author = document.createElement("span");
  author.className = "nick";
  author.textContent = from;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(time, " ", author, " ", body);

  const list = $("messages");
  const later = positioned
    ? [...list.children].find((other) => other.dataset.epoch === epoch && Number(other.dataset.seq) > seq)
    : null;
  list.insertBefore(item, later || null);
  while (list.children.length > MESSAGES_KEPT) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

/** A line between the messages: someone entered or left (the presence topic, the meta events). */
function showArrival(text) {
  const item = document.createElement("li");
  item.className = "arrival";
  const time = document.createElement("time");
  time.textContent = clockTime(new Date()).slice(0, 8);
  item.append(time, " ", text);
  $("messages").append(item);
}

/** The room's last messages, as the server keeps them (none when it keeps no history for the room). */
async function showHistory() {
  try {
    const id = await client.call("wamp.subscription.lookup", [roomTopic]);
    const entries = id === null ? [] : await client.call("wamp.subscription.get_events", [id, HISTORY_SHOWN]);
    for (const { args, details, timestamp } of entries || []) {
      showMessage({ args: args || [], details: { ...details, timestamp }, fromHistory: true });
    }
  } catch (error) {
    showNotice(`no earlier messages: ${describeError(error)} (start the server with --demo, or see the README's chat section)`);
  }
}

/** After a reconnect: the missed messages came (recovered), or some are lost and the room is shown afresh. */
function resumed({ recovered }) {
  if (recovered) return;
  $("messages").replaceChildren();
  shown.clear();
  showHistory();
}

async function send(text) {
  await client.publish(roomTopic, [{ nick, text }], {}, { exclude_me: false });
}

// -- who is here -------------------------------------------------------------------------------------

function drawMembers() {
  const own = client.session ? client.session.id : null;
  const items = [...members].map((session) => {
    const item = document.createElement("li");
    item.dataset.session = String(session);
    item.textContent = (nicks.get(session) || `session ${session}`) + (session === own ? " (you)" : "");
    return item;
  });
  items.sort((a, b) => a.textContent.localeCompare(b.textContent));
  $("members").replaceChildren(...items);
  $("presence-count").textContent = String(members.size);
}

/**
 * Once per connection, when the room's, the presence topic's and the meta events' subscriptions
 * are all made: who is subscribed now (the meta events keep it up to date from here on), then
 * "hello" to them, which each answers with its nickname.
 */
async function syncPresence() {
  const session = client.session;
  const id = await client.call("wamp.subscription.lookup", [roomTopic]);
  const sessions = id === null ? [] : await client.call("wamp.subscription.list_subscribers", [id]);
  if (client.session !== session) return;
  roomSubscription = id;
  members.clear();
  for (const subscriber of sessions || []) members.add(subscriber);
  // forget those who left while this page was away (it did not hear them go)
  for (const known of [...nicks.keys()]) if (!members.has(known)) nicks.delete(known);
  answered.clear();
  nicks.set(session.id, nick);
  drawMembers();
  await announce("hello");
}

/** Say who this page is on the presence topic ("hello": answer me; "here": no answer wanted). */
async function announce(type, options = {}) {
  const presence = [{ type, session: client.session.id, nick }];
  try {
    await client.publish(presenceTopic, presence, {}, { ...presenceOptions, ...options });
  } catch (error) {
    if (!presenceOptions.disclose_me || !String(error.error).startsWith("wamp.error.option_disallowed")) throw error;
    presenceOptions = {}; // this role may not disclose itself: the others take the session the message claims
    await client.publish(presenceTopic, presence, {}, options);
  }
}

function onPresence({ args, details }) {
  const { type, session: claimed, nick: name } = args[0] || {};
  // The router's word on who published; the message's own claim only where nobody can disclose.
  const session = Number.isInteger(details.publisher) ? details.publisher : presenceOptions.disclose_me ? null : claimed;
  if (!members.has(session) || typeof name !== "string") return;
  nicks.set(session, cleanNick(name));
  drawMembers();
  if (type === "hello" && client.session && session !== client.session.id && !answered.has(session)) {
    answered.add(session);
    showArrival(`${cleanNick(name)} entered`);
    announce("here", { eligible: [session] })
      .catch((error) => showNotice(`cannot answer ${cleanNick(name)}: ${describeError(error)}`));
  }
}

function onSubscriptionCreated({ args: [, details] }) {
  if (!details || typeof details.uri !== "string") return;
  if (details.uri === roomTopic) roomSubscription = details.id;
  if (details.match === "exact" && details.uri.startsWith(ROOM_PREFIX)) addRoom(details.uri.slice(ROOM_PREFIX.length));
}

function onSubscribed({ args: [session, subscription] }) {
  if (subscription !== roomSubscription || members.has(session)) return;
  members.add(session);
  drawMembers();
}

function onUnsubscribed({ args: [session, subscription] }) {
  if (subscription !== roomSubscription || !members.delete(session)) return;
  showArrival(`${nicks.get(session) || `session ${session}`} left`);
  nicks.delete(session);
  answered.delete(session);
  drawMembers();
}

async function setNick(name) {
  nick = cleanNick(name);
  localStorage.setItem("wsserver.chat.nick", nick);
  $("nick").value = nick;
  if (!client.session) return;
  nicks.set(client.session.id, nick);
  drawMembers();
  await announce("here");
}

// -- rooms -------------------------------------------------------------------------------------------

function roomLink(name) {
  const url = new URL(location.href);
  url.searchParams.set("room", name);
  url.searchParams.set("nick", nick);
  return url.pathname + url.search;
}

function addRoom(name) {
  if (!ROOM_NAME.test(name) || rooms.has(name)) return;
  const item = document.createElement("li");
  item.dataset.room = name;
  const link = document.createElement("a");
  link.textContent = name;
  link.href = roomLink(name);
  link.addEventListener("click", () => { link.href = roomLink(name); }); // the nickname may have changed
  if (name === room) link.setAttribute("aria-current", "page");
  const unread = document.createElement("span");
  unread.className = "unread";
  item.append(link, " ", unread);
  rooms.set(name, item);
  const list = $("rooms");
  const after = [...list.children].find((other) => other.dataset.room > name);
  list.insertBefore(item, after || null);
}

/** A message in any room (the prefix subscription): list the room, count it as unread if it is another. */
function onAnyRoom({ topic }) {
  const name = topic.slice(ROOM_PREFIX.length);
  addRoom(name);
  if (name === room || !rooms.has(name)) return;
  const unread = rooms.get(name).querySelector(".unread");
  unread.textContent = String(Number(unread.textContent || 0) + 1);
}

/** The rooms of the last messages the server keeps, through the prefix subscription `subscription`. */
async function listRooms(subscription) {
  const kept = await client.call("wamp.subscription.get_events", [subscription.id, ROOMS_FROM_HISTORY]);
  for (const { topic } of kept || []) addRoom(topic.slice(ROOM_PREFIX.length));
}

// -- the page ----------------------------------------------------------------------------------------

const settings = connectionSettings();
$("endpoint").textContent = `${settings.url} · realm ${settings.realm}`;
$("room-name").textContent = room;
$("room-topic").textContent = roomTopic;
$("nick").value = nick;
document.title = `${room} · Chat · wsserver`;
addRoom("lobby");
addRoom(room);

// Presence is synced once these are all subscribed on the current session.
const needed = new Set([roomTopic, presenceTopic, ON_SUBSCRIBE, ON_UNSUBSCRIBE]);
const active = new Set();

const client = new WampClient({
  ...settings,
  onState(state, detail) {
    showState(state, detail);
    if (state !== "open") active.clear();
  },
  onNotice: showNotice,
  onSubscription(topic, status) {
    if (status === "active") active.add(topic);
    else active.delete(topic);
    const session = client.session;
    if (session && presenceSession !== session && [...needed].every((t) => active.has(t))) {
      presenceSession = session;
      syncPresence().catch((error) => showNotice(`cannot tell who is here: ${describeError(error)}`));
    }
  },
});

for (const [topic, handler, options] of [
  [ON_CREATE, onSubscriptionCreated, {}],
  [ON_SUBSCRIBE, onSubscribed, {}],
  [ON_UNSUBSCRIBE, onUnsubscribed, {}],
  [presenceTopic, onPresence, {}],
  [ROOM_PREFIX, onAnyRoom, { match: "prefix" }],
  [roomTopic, showMessage, { resume: true, onResume: resumed }],
]) {
  const subscribed = client.subscribe(topic, handler, options);
  subscribed.catch((error) => showNotice(`cannot subscribe to ${topic}: ${describeError(error)}`));
  if (topic === roomTopic) subscribed.then(showHistory, () => {});
  // without history there is nothing to list from: the room list then grows as rooms speak
  if (topic === ROOM_PREFIX) subscribed.then(listRooms).catch(() => {});
}

$("message-form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const input = $("message");
  const text = input.value;
  if (!text.trim()) return;
  send(text).then(() => { input.value = ""; }, (error) => showNotice(`not sent: ${describeError(error)}`));
});
$("nick-form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  setNick($("nick").value).catch((error) => showNotice(`nickname not announced: ${describeError(error)}`));
});
$("room-form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  location.href = roomLink($("new-room").value.trim().toLowerCase());
});
// Leaving the page (another room, another site) leaves the room at once, even when the browser keeps
// the page in its back/forward cache, where its connection would stay open; coming back rejoins.
window.addEventListener("pagehide", () => client.close());
window.addEventListener("pageshow", (shown) => { if (shown.persisted) client.open(); });
client.open();
