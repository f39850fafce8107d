/*
 * Test glue (never served to users): run the site's pages on the web-socket-js Flash path in headless
 * Chromium, with Ruffle (a Flash emulator in WebAssembly) standing in for Flash Player.
 *
 * Injected with Page.addScriptToEvaluateOnNewDocument, so it runs before any script of the page,
 * followed by ruffle.js itself. RUFFLE_TEST ({socketHost, socketPort, proxyUrl, publicPath}) is
 * defined just before this file. What it does, in the order the facts in
 * shared/notes/flash-in-chromium.md require:
 *   1. keeps the native WebSocket class and removes window.WebSocket, so the page's
 *      websocket-fallback.js loads web-socket-js;
 *   2. configures Ruffle (autoplay, where its files are, and the socket proxy: Ruffle turns the SWF's
 *      TCP socket to socketHost:socketPort into a WebSocket to proxyUrl, a websockify process);
 *   3. wraps initMessageEvent, which web_socket.js calls with ports = null (Chromium throws);
 *   4. wraps the shim's constructor when web_socket.js installs it: Ruffle opens its proxy connection
 *      with window.WebSocket, which must then be the native class.
 * ruffle.js, evaluated right after, installs the "Shockwave Flash" plugin that swfobject.js detects.
 */
(function (test) {
  "use strict";
  var NativeWebSocket = window.WebSocket;
  delete window.WebSocket;

  window.RufflePlayer = {
    config: {
      autoplay: "on",
      unmuteOverlay: "hidden",
      splashScreen: false,
      publicPath: test.publicPath,
      socketProxy: [{ host: test.socketHost, port: test.socketPort, proxyUrl: test.proxyUrl }],
    },
  };

  var initMessageEvent = MessageEvent.prototype.initMessageEvent;
  MessageEvent.prototype.initMessageEvent = function (type, bubbles, cancelable, data, origin, lastEventId, source, ports) {
    return initMessageEvent.call(this, type, bubbles, cancelable, data, origin, lastEventId, source, ports || []);
  };

  var shim;
  Object.defineProperty(window, "WebSocket", {
    configurable: true,
    get: function () { return shim; },
    set: function (installed) {
      shim = new Proxy(installed, {
        construct: function (target, args) {
          if (String(args[0]).indexOf(test.proxyUrl) === 0) {
            return new NativeWebSocket(args[0], args[1]);
          }
          return Reflect.construct(target, args);
        },
      });
    },
  });
})(RUFFLE_TEST);
