// wampy.js (npm `wampy`, pinned in package-lock.json) against a running server: pub/sub and RPC
// between two wampy sessions on one serializer, as its users write them (options they do not
// need are left out, so wampy sends them as undefined on msgpack and CBOR).
//
// Usage: node wampy_checks.mjs URL SERIALIZER [REALM]  (SERIALIZER: json, msgpack or cbor)
// Prints one JSON line per check, {"check", "ok", "detail"}, then {"passed", "total"}; exits 0
// once every check has run (the caller judges the lines).
import { Wampy } from "wampy";
import { JsonSerializer } from "wampy/JsonSerializer.js";
import { MsgpackSerializer } from "wampy/MsgpackSerializer.js";
import { CborSerializer } from "wampy/CborSerializer.js";
import WebSocket from "ws";

const [url, serializerName, realm = "realm1"] = process.argv.slice(2);
const SERIALIZERS = { json: JsonSerializer, msgpack: MsgpackSerializer, cbor: CborSerializer };
const STEP_TIMEOUT_MS = 5000;

const results = [];
function report(check, ok, detail = "") {
  results.push(ok);
  console.log(JSON.stringify({ check, ok, detail: String(detail) }));
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Runs one check: `body` returns a detail string or throws; a failure does not stop the others. */
async function check(name, body) {
  try {
    report(name, true, (await withTimeout(Promise.resolve().then(body), name)) ?? "");
  } catch (error) {
    report(name, false, error?.errorUri ? `${error.errorUri} ${JSON.stringify(error.argsList ?? [])}` : error?.message ?? error);
  }
}

/** A promise for the next event a handler receives, and the handler to subscribe with. */
function inbox() {
  const waiting = [];
  const received = [];
  return {
    handler: (event) => (waiting.length ? waiting.shift()(event) : received.push(event)),
    next: () => (received.length ? Promise.resolve(received.shift()) : new Promise((resolve) => waiting.push(resolve))),
  };
}

function expectEqual(actual, expected, what) {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${what}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
  }
}

function session() {
  let closedUnexpectedly = null;
  const wampy = new Wampy(url, {
    realm,
    ws: WebSocket,
    autoReconnect: false,
    serializer: new SERIALIZERS[serializerName](),
    onClose: () => { closedUnexpectedly ??= "closed"; },
    onError: (error) => { closedUnexpectedly ??= error?.message ?? String(error); },
  });
  return { wampy, closed: () => closedUnexpectedly, goodbye: () => { closedUnexpectedly = "goodbye"; } };
}

const a = session(); // subscriber and callee
const b = session(); // publisher and caller
const plain = inbox();
const withOptions = inbox();
const own = inbox();
const byPrefix = inbox();

await check("connect", async () => { await a.wampy.connect(); await b.wampy.connect(); return `sessions ${a.wampy.getSessionId()}, ${b.wampy.getSessionId()}`; });
await check("subscribe without options", async () => `subscription ${(await a.wampy.subscribe("com.example.plain", plain.handler)).subscriptionId}`);
await check("subscribe with options", async () => `subscription ${(await a.wampy.subscribe("com.example.options", withOptions.handler, {})).subscriptionId}`);
// wampy 8 sends exclude_me only when it is true (publish() drops `exclude_me: false`), so the
// publisher is never sent its own event, on any router: the other session's copy is checked.
await check("subscribe to what the publisher publishes with exclude_me", async () => `subscription ${(await a.wampy.subscribe("com.example.own", own.handler)).subscriptionId}`);
await check("subscribe with match prefix", async () => `subscription ${(await a.wampy.subscribe("com.example.prefix", byPrefix.handler, { match: "prefix" })).subscriptionId}`);
await check("publish without options", async () => { await b.wampy.publish("com.example.plain", [1, "two"]); return "sent"; });
await check("event without options received", async () => { const event = await plain.next(); expectEqual(event.argsList, [1, "two"], "args"); return "args intact"; });
await check("publish with acknowledge", async () => `publication ${(await b.wampy.publish("com.example.options", { argsList: ["x"], argsDict: { k: "v" } })).publicationId}`);
await check("event with kwargs received", async () => { const event = await withOptions.next(); expectEqual([event.argsList, event.argsDict], [["x"], { k: "v" }], "payload"); return "args and kwargs intact"; });
await check("publish with exclude_me false", async () => { await b.wampy.publish("com.example.own", ["self"], { exclude_me: false }); return "sent"; });
await check("event published with exclude_me false received", async () => { expectEqual((await own.next()).argsList, ["self"], "args"); return "received"; });
await check("publish under the prefix", async () => { await b.wampy.publish("com.example.prefix.deeper", ["p"]); return "sent"; });
await check("prefix event names its topic", async () => { const event = await byPrefix.next(); expectEqual(event.details.topic, "com.example.prefix.deeper", "details.topic"); return "details.topic given"; });
await check("register", async () => `registration ${(await a.wampy.register("com.example.add", ({ argsList }) => ({ argsList: [argsList[0] + argsList[1]] }))).registrationId}`);
await check("register a failing procedure", async () => `registration ${(await a.wampy.register("com.example.fail", () => { throw { error: "com.example.error.refused", argsList: ["no"], argsDict: { why: "test" } }; })).registrationId}`);
await check("call and result", async () => { expectEqual((await b.wampy.call("com.example.add", [2, 3])).argsList, [5], "result"); return "2 + 3 = 5"; });
await check("error from the callee", async () => {
  try { await b.wampy.call("com.example.fail", []); } catch (error) {
    expectEqual([error.errorUri, error.argsList, error.argsDict], ["com.example.error.refused", ["no"], { why: "test" }], "error");
    return "error URI, args and kwargs intact";
  }
  throw new Error("the call succeeded");
});
await check("call with no callee is an error", async () => {
  try { await b.wampy.call("com.example.nobody", []); } catch (error) { expectEqual(error.errorUri, "wamp.error.no_such_procedure", "error"); return error.errorUri; }
  throw new Error("the call succeeded");
});
await check("unsubscribe and unregister", async () => { await a.wampy.unsubscribe("com.example.plain"); await a.wampy.unregister("com.example.add"); return "done"; });
await check("both sessions still open", async () => {
  if (a.closed() || b.closed()) throw new Error(`closed: ${a.closed()} / ${b.closed()}`);
  expectEqual((await b.wampy.call("com.example.nobody", []).catch((error) => error.errorUri)), "wamp.error.no_such_procedure", "a last request");
  a.goodbye(); b.goodbye();
  await a.wampy.disconnect(); await b.wampy.disconnect();
  return "goodbye";
});

console.log(JSON.stringify({ passed: results.filter(Boolean).length, total: results.length }));
process.exit(0);
