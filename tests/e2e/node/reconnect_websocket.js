/*
 * require("./reconnect_websocket.js") before require("autobahn"), in a Node peer that must see every
 * failed connection attempt (reconnects while a server is down, or an unreachable server).
 *
 * The WebSocket in some Node versions (undici before nodejs/undici#3566, e.g. Node 20) fires "error"
 * but never "close" when it cannot connect; AutobahnJS listens only for "close", so it would wait
 * forever (and stop retrying). This replaces the global WebSocket with one that delivers the close
 * the standard requires, once, if the runtime did not.
 */
"use strict";

class WebSocketThatAlwaysCloses extends WebSocket {
  constructor(...args) {
    super(...args);
    let closeSeen = false;
    this.addEventListener("close", () => (closeSeen = true));
    this.addEventListener("error", () =>
      setTimeout(() => {
        if (!closeSeen && this.onclose) {
          closeSeen = true;
          this.onclose({ code: 1006, reason: "connection failed", wasClean: false });
        }
      }, 100),
    );
  }
}

globalThis.WebSocket = WebSocketThatAlwaysCloses;
