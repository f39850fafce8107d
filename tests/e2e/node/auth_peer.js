#!/usr/bin/env node
/*
 * AutobahnJS (npm "autobahn") logging in to wsserver, for tests/e2e/test_auth.py.
 *
 *   node auth_peer.js WS_URL REALM METHOD AUTHID SECRET [TOPIC]
 *
 * METHOD is anonymous, ticket, wampcra or cryptosign; SECRET is the ticket, the WAMP-CRA secret
 * (the password when the router's challenge carries a salt: AutobahnJS derives the key), or the
 * Ed25519 private key seed (64 hex digits). AUTHID may be "" (none sent).
 *
 * Prints one JSON line: {"welcome": {"authid", "authrole", "authmethod"}}, or {"refused":
 * {"reason", "message"}} when the router ABORTs. Once welcomed, with TOPIC, it publishes there
 * (acknowledged) and prints {"published": ID} or {"publish_error": URI}. Then it leaves and exits 0.
 * Exits 1 if the connection fails, 2 if this Node has no WebSocket (Node 22+, or Node 20.10+ with
 * --experimental-websocket).
 */
"use strict";

const [url, realm, method, authid, secret, topic] = process.argv.slice(2);
if (!url || !method) {
  console.error("usage: node auth_peer.js WS_URL REALM METHOD AUTHID SECRET [TOPIC]");
  process.exit(64);
}
if (typeof WebSocket === "undefined") {
  console.error(`Node ${process.version} has no global WebSocket`);
  process.exit(2);
}

const autobahn = require("autobahn");

const say = (message) => console.log(JSON.stringify(message));
let welcomed = false;

// What AutobahnJS answers to each CHALLENGE, with its own helpers.
const logins = {
  anonymous: () => ({}),
  ticket: () => ({ onchallenge: () => secret }),
  wampcra: () => ({
    onchallenge: (session, challengeMethod, extra) => {
      const key = extra.salt ? autobahn.auth_cra.derive_key(secret, extra.salt, extra.iterations, extra.keylen) : secret;
      return autobahn.auth_cra.sign(key, extra.challenge);
    },
  }),
  cryptosign: () => {
    const pkey = autobahn.nacl.sign.keyPair.fromSeed(autobahn.util.htob(secret));
    return {
      authextra: { pubkey: autobahn.auth_cryptosign.public_key(pkey), channel_binding: null },
      onchallenge: (session, challengeMethod, extra) => autobahn.auth_cryptosign.sign_challenge(pkey, extra),
    };
  },
};

const connection = new autobahn.Connection({
  url,
  realm,
  authmethods: [method],
  authid: authid || undefined,
  ...logins[method](),
  serializers: [new autobahn.serializer.JSONSerializer()],
  max_retries: 0,
  retry_if_unreachable: false,
});

connection.onopen = async (session, details) => {
  welcomed = true;
  say({ welcome: { authid: details.authid, authrole: details.authrole, authmethod: details.authmethod } });
  if (topic) {
    try {
      const publication = await session.publish(topic, ["from node"], {}, { acknowledge: true });
      say({ published: publication.id });
    } catch (error) {
      say({ publish_error: error.error || String(error) });
    }
  }
  connection.close("wamp.close.normal", "done");
};

connection.onclose = (reason, details) => {
  if (!welcomed) {
    if (!details.reason) {
      console.error(`connection ended before WELCOME: ${reason}`);
      process.exit(1);
    }
    say({ refused: { reason: details.reason, message: details.message } });
  }
  process.exit(0);
};

connection.open();
