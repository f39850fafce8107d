#!/usr/bin/env node
/*
 * AutobahnJS (npm "autobahn") as callee and caller of the dealer's Advanced Profile, for
 * tests/e2e/test_dealer_node.py:
 *
 *   node dealer_peer.js WS_URL
 *
 * Two sessions: a callee registers com.example.js.count (progressive results when the caller asks)
 * and com.example.js.slow (never answers); a caller calls count with receive_progress, then slow,
 * and cancels it; then two callees share com.example.js.shared (roundrobin), and prefix and wildcard
 * registrations answer with the procedure called (details.procedure). Mode kill: with skip or killnowait AutobahnJS rejects the call at once and then
 * takes the router's ERROR (which the spec requires) for a protocol violation. The router sends no
 * INTERRUPT to an AutobahnJS callee (it does not announce call_canceling and cannot handle one),
 * so the call is canceled as with skip: the caller gets ERROR wamp.error.canceled at once. Prints one JSON line per outcome, then "DONE", and exits 0;
 * exits 1 on a connection failure, 3 after 15 s.
 */
"use strict";

if (typeof WebSocket === "undefined") {
  console.error(`Node ${process.version} has no global WebSocket: use Node 22+, or --experimental-websocket`);
  process.exit(2);
}
require("./reconnect_websocket.js");
const autobahn = require("autobahn");

const [url] = process.argv.slice(2);
setTimeout(() => {
  console.error("not done within 15 s");
  process.exit(3);
}, 15000).unref();

function open() {
  return new Promise((resolve, reject) => {
    const connection = new autobahn.Connection({
      url,
      realm: "realm1",
      serializers: [new autobahn.serializer.JSONSerializer()],
      max_retries: 0,
      retry_if_unreachable: false,
    });
    connection.onopen = (session) => resolve(session);
    connection.onclose = (reason, details) => {
      reject(new Error(`connection closed: ${reason} ${JSON.stringify(details)}`));
      return true;
    };
    connection.open();
  });
}

async function main() {
  const callee = await open();
  const caller = await open();
  await callee.register("com.example.js.count", (args, kwargs, details) => {
    const n = args[0];
    if (details.progress) {
      for (let step = 1; step <= n; step++) details.progress([step]);
    }
    return `counted to ${n}`;
  });
  await callee.register("com.example.js.slow", () => new Promise(() => {}));

  const progress = [];
  const result = await caller.call("com.example.js.count", [3], {}, { receive_progress: true }).then(
    (value) => value,
    null,
    (update) => progress.push(update),
  );
  console.log(JSON.stringify({ progress, result }));

  const slow = caller.call("com.example.js.slow", [], {});
  setTimeout(() => slow.cancel({ mode: "kill" }), 200);
  const canceled = await slow.then(
    () => ({ canceled: false }),
    (error) => ({ canceled: true, error: error.error || String(error) }),
  );
  console.log(JSON.stringify(canceled));
  // Both sessions still work: the callee was not sent what it cannot handle.
  console.log(JSON.stringify({ after: await caller.call("com.example.js.count", [1]) }));

  // A shared registration: two callees, roundrobin; then a prefix registration told the procedure.
  const other = await open();
  const shared = { invoke: "roundrobin" };
  await callee.register("com.example.js.shared", () => "callee", shared);
  await other.register("com.example.js.shared", () => "other", shared);
  const turns = [];
  for (let n = 0; n < 4; n++) turns.push(await caller.call("com.example.js.shared"));
  console.log(JSON.stringify({ roundrobin: turns }));
  await other.register("com.example.js.any.", (args, kwargs, details) => details.procedure, { match: "prefix" });
  await other.register("com.example.js..get", (args, kwargs, details) => details.procedure, { match: "wildcard" });
  console.log(JSON.stringify({
    prefix: await caller.call("com.example.js.any.thing"),
    wildcard: await caller.call("com.example.js.users.get"),
  }));
  console.log("DONE");
  process.exit(0);
}

main().catch((error) => {
  console.error(String(error && error.stack ? error.stack : error));
  process.exit(1);
});
