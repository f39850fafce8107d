#!/usr/bin/env node
/*
 * The pages' helper web/js/wsclient.js itself, run under Node with AutobahnJS (npm "autobahn"), for
 * tests/e2e/test_resume_node.py: one subscription made with { resume: true }, WebSocket only.
 *
 *   node resume_subscriber.mjs WS_URL TOPIC [MATCH]     (MATCH: exact, the default, prefix or wildcard)
 *
 * Prints one JSON object per line: {"state": STATE} per state change, {"active": TOPIC} when the
 * broker acknowledged the subscription, {"event": ARGS, "seq": _seq, "recovered": bool} per event
 * the page would get, {"resume": {topic, recovered, missed, reason}} per resume. Exits 0 when stdin
 * closes or says "quit".
 */
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import readline from "node:readline";

const require = createRequire(import.meta.url);
const [url, topic, match = "exact"] = process.argv.slice(2);
if (!url || !topic) {
  console.error("usage: node resume_subscriber.mjs WS_URL TOPIC");
  process.exit(64);
}
require("./reconnect_websocket.js"); // every failed reconnect attempt must end (Node 20's WebSocket)
globalThis.autobahn = require("autobahn");
// wsclient.js is an ES module for browsers, in a directory without "type": "module": import its text.
const source = readFileSync(new URL("../../../web/js/wsclient.js", import.meta.url), "utf8");
const { WampClient } = await import(`data:text/javascript,${encodeURIComponent(source)}`);

const say = (message) => console.log(JSON.stringify(message));
const client = new WampClient({
  url,
  longPollUrl: null,
  realm: "realm1",
  onState: (state) => say({ state }),
  onSubscription: (subscribed, status) => status === "active" && say({ active: subscribed }),
});
client.subscribe(topic, (event) => say({ event: event.args, seq: event.details._seq, recovered: !!event.recovered }), {
  match,
  resume: true,
  onResume: (result) => say({ resume: result }),
});
client.open();

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "quit") process.stdin.destroy();
}).on("close", () => {
  client.close();
  setTimeout(() => process.exit(0), 200);
});
