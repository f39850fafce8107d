#!/usr/bin/env node
/*
 * A scriptable AutobahnJS peer (npm "autobahn") for tests/e2e/test_broker_node.py: it joins, then
 * runs commands read from stdin and reports on stdout, one JSON object per line each way.
 *
 *   node broker_peer.js WS_URL [REALM]
 *
 * WS_URL may be an http:// URL of the long-poll endpoint (http://HOST:PORT/lp): the peer then uses
 * AutobahnJS's long-poll transport only, over ./xhr.js.
 *
 * Prints {"ready": SESSION_ID} once joined. Commands (every one has a "tag", echoed in its answer):
 *
 *   {"tag": T, "op": "subscribe", "topic": URI, "options": {...}}   -> {"tag": T, "subscribed": ID}
 *       then each event: {"tag": T, "event": {"args", "kwargs", "topic", "publisher", "retained"}}
 *   {"tag": T, "op": "publish", "topic": URI, "args": [...], "kwargs": {...}, "options": {...}}
 *                                                                    -> {"tag": T, "published": ID}
 *   {"tag": T, "op": "call", "procedure": URI, "args": [...], "kwargs": {...}}
 *                                                      -> {"tag": T, "result": {"args", "kwargs"}}
 *   {"tag": T, "op": "register", "procedure": URI}  (the procedure answers [args, kwargs] as given)
 *                                                                   -> {"tag": T, "registered": ID}
 *   {"tag": T, "op": "leave"}                               -> closes the session and exits 0
 *
 * A request that fails answers {"tag": T, "error": {"error": URI, "args": [...]}}. Exits 1 if
 * the connection cannot be made or ends unasked, 2 if this Node has no WebSocket (autobahn >= 26
 * uses the global one: Node 22+, or --experimental-websocket on Node 20.10+).
 */
"use strict";

const readline = require("readline");

const [url, realm = "realm1"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node broker_peer.js WS_URL [REALM]");
  process.exit(64);
}
if (typeof WebSocket === "undefined") {
  console.error(`Node ${process.version} has no global WebSocket`);
  process.exit(2);
}

const autobahn = require("autobahn");

const say = (message) => console.log(JSON.stringify(message));
const failure = (tag) => (error) => say({ tag, error: { error: error.error || String(error), args: error.args || [] } });
let leaving = false;

const longPoll = /^https?:/.test(url);
if (longPoll) require("./xhr.js");

const connection = new autobahn.Connection({
  ...(longPoll ? { transports: [{ type: "longpoll", url }] } : { url }),
  realm,
  serializers: [new autobahn.serializer.JSONSerializer()],
  max_retries: 0,
  retry_if_unreachable: false,
});

const commands = {
  subscribe(session, { tag, topic, options }) {
    const onEvent = (args, kwargs, details) =>
      say({
        tag,
        event: {
          args: args || [],
          kwargs: kwargs || {},
          topic: details.topic,
          publisher: details.publisher === undefined ? null : details.publisher,
          retained: details.retained,
        },
      });
    return session.subscribe(topic, onEvent, options || {}).then((subscription) => say({ tag, subscribed: subscription.id }));
  },
  publish(session, { tag, topic, args, kwargs, options }) {
    const acknowledged = Object.assign({ acknowledge: true }, options || {});
    return session.publish(topic, args || [], kwargs || {}, acknowledged).then((publication) => say({ tag, published: publication.id }));
  },
  call(session, { tag, procedure, args, kwargs }) {
    return session.call(procedure, args || [], kwargs || {}).then((result) =>
      say({
        tag,
        result: result instanceof autobahn.Result ? { args: result.args, kwargs: result.kwargs } : { args: [result], kwargs: {} },
      }),
    );
  },
  register(session, { tag, procedure }) {
    const answer = (args, kwargs) => new autobahn.Result(args || [], kwargs || {});
    return session.register(procedure, answer).then((registration) => say({ tag, registered: registration.id }));
  },
  leave() {
    leaving = true;
    connection.close("wamp.close.normal", "done");
    setTimeout(() => process.exit(0), 3000).unref();
    return Promise.resolve();
  },
};

connection.onopen = (session) => {
  say({ ready: session.id });
  readline.createInterface({ input: process.stdin }).on("line", (line) => {
    const command = JSON.parse(line);
    const run = commands[command.op];
    if (!run) {
      failure(command.tag)(new Error(`unknown op ${command.op}`));
      return;
    }
    run(session, command).catch(failure(command.tag));
  });
};

connection.onclose = (reason, details) => {
  if (leaving) process.exit(0);
  console.error(`connection ended: ${reason} ${JSON.stringify(details)}`);
  process.exit(1);
};

connection.open();
