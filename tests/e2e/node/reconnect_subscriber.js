#!/usr/bin/env node
/*
 * An AutobahnJS (npm "autobahn") subscriber that stays subscribed across a server restart, for
 * tests/e2e/test_reconnect.py. It is the client side of a graceful shutdown, as documented in the
 * README:
 *
 *   AutobahnJS reconnects by itself when a connection is lost, but not when the router ended the
 *   session with GOODBYE (connection.js sets _retry = false in onleave), and a server that shuts
 *   down says GOODBYE wamp.close.system_shutdown. So on that close reason the client opens the
 *   connection again itself; AutobahnJS's retries then wait for the server to come back. The
 *   subscriptions are made again on every open (a broker forgets them with the session).
 *   web/js/wsclient.js does the same for the site's pages.
 *
 *   node reconnect_subscriber.js WS_URL TOPIC
 *
 * Prints one JSON object per line: {"joined": SESSION_ID} once subscribed (again after each
 * reconnect), {"event": ARGS} per event, {"closed": {"reason", "wamp_reason", "will_retry",
 * "reopening"}} per close. "quit" on stdin leaves and exits 0. Exits 2 if this Node has no WebSocket.
 */
"use strict";

const readline = require("readline");

const [url, topic] = process.argv.slice(2);
if (!url || !topic) {
  console.error("usage: node reconnect_subscriber.js WS_URL TOPIC");
  process.exit(64);
}
if (typeof WebSocket === "undefined") {
  console.error(`Node ${process.version} has no global WebSocket`);
  process.exit(2);
}

// Retries while the server is down must see each failed attempt end (Node 20's WebSocket).
require("./reconnect_websocket.js");

const autobahn = require("autobahn");

const say = (message) => console.log(JSON.stringify(message));
const REOPEN_AFTER_MS = 300;
let quitting = false;

const connection = new autobahn.Connection({
  url,
  realm: "realm1",
  serializers: [new autobahn.serializer.JSONSerializer()],
  max_retries: -1,
  initial_retry_delay: 0.3,
  max_retry_delay: 1,
  retry_delay_jitter: 0.1,
  retry_if_unreachable: true,
});

connection.onopen = (session) => {
  session
    .subscribe(topic, (args) => say({ event: args }))
    .then(() => say({ joined: session.id }), (error) => say({ subscribe_error: error.error || String(error) }));
};

connection.onclose = (reason, details) => {
  const reopening = !quitting && !details.will_retry && details.reason === "wamp.close.system_shutdown";
  say({ closed: { reason, wamp_reason: details.reason || null, will_retry: details.will_retry, reopening } });
  if (quitting) process.exit(0);
  if (reopening) {
    setTimeout(() => connection.open(), REOPEN_AFTER_MS);
  }
  return false; // never cancel AutobahnJS's own retries
};

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() !== "quit") return;
  quitting = true;
  try {
    connection.close("wamp.close.normal", "done");
  } catch (alreadyClosed) {
    process.exit(0);
  }
  setTimeout(() => process.exit(0), 3000).unref();
});

connection.open();
