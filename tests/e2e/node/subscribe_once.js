#!/usr/bin/env node
/*
 * Subscribe with AutobahnJS (npm "autobahn") and print the first event: a real Node WAMP peer for
 * tests/e2e/test_node_autobahnjs.py.
 *
 *   node subscribe_once.js WS_URL TOPIC [REALM]
 *
 * Prints "READY" once the broker has acknowledged the subscription, then the first event's
 * positional arguments as one line of JSON, and exits 0. Exits 1 if it cannot connect or the
 * connection ends first, 2 if this Node has no WebSocket, 3 after 15 s without an event.
 * The "autobahn" package is found in the repository's node_modules (installed by `npm ci`).
 *
 * autobahn >= 26 uses the global WebSocket: built into Node 22+, behind --experimental-websocket
 * on Node 20.10+.
 */
"use strict";

const TIMEOUT_MS = 15000;

const [url, topic, realm = "realm1"] = process.argv.slice(2);
if (!url || !topic) {
  console.error("usage: node subscribe_once.js WS_URL TOPIC [REALM]");
  process.exit(64);
}
if (typeof WebSocket === "undefined") {
  console.error(
    `Node ${process.version} has no global WebSocket: use Node 22+, or --experimental-websocket on Node 20.10+`,
  );
  process.exit(2);
}

// A failed connection must reach AutobahnJS as a close, in every Node version (see that file).
require("./reconnect_websocket.js");

const autobahn = require("autobahn");

const timeout = setTimeout(() => {
  console.error(`no event on ${topic} within ${TIMEOUT_MS / 1000} s`);
  process.exit(3);
}, TIMEOUT_MS);

const connection = new autobahn.Connection({
  url,
  realm,
  serializers: [new autobahn.serializer.JSONSerializer()], // subprotocol wamp.2.json
  max_retries: 0, // one attempt: a test wants a quick, clear failure
  retry_if_unreachable: false,
});

let received = false;

connection.onopen = (session) => {
  session.subscribe(topic, (args) => {
    if (received) return;
    received = true;
    console.log(JSON.stringify(args || []));
    clearTimeout(timeout);
    connection.close("wamp.close.normal", "got the event");
    // the event is out; do not hang if the broker never answers our GOODBYE
    setTimeout(() => process.exit(0), 3000).unref();
  }).then(
    () => console.log("READY"),
    (error) => {
      console.error(`subscribe to ${topic} failed: ${error.error || error}`);
      process.exit(1);
    },
  );
};

connection.onclose = (reason, details) => {
  if (received) {
    process.exit(0);
  }
  console.error(`connection ended before an event: ${reason} ${JSON.stringify(details)}`);
  process.exit(1);
};

connection.open();
