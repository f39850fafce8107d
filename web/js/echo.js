/*
 * The echo page: a bare WebSocket to the server's /echo service, and a log of what goes each way.
 *
 * Every received message is matched with the oldest message still waiting for its echo (the server
 * answers in order), which gives its round-trip time. Each log line is an <li> with data-kind
 * ("open" | "sent" | "received" | "closed" | "error") and, for "received", data-rtt in ms.
 *
 * Plain ES5 and a classic script on purpose: this page also runs through the web-socket-js Flash
 * fallback (see websocket-fallback.js) in browsers too old for modules. web-socket-js carries text
 * only, so "Send binary" is offered with a native WebSocket only.
 */
(function () {
  "use strict";

  var MAX_LOG_LINES = 500;
  var $ = function (id) { return document.getElementById(id); };
  var now = window.performance && performance.now ? function () { return performance.now(); } : function () { return +new Date(); };

  var socket = null;
  var pending = []; // send times (ms) of messages whose echo has not arrived yet, oldest first

  function defaultUrl() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + "/echo";
  }

  function isFlashShim() {
    return !!(window.WebSocket && window.WebSocket.__isFlashImplementation);
  }

  function canSendBinary() {
    return !isFlashShim() && typeof window.TextEncoder === "function" && typeof window.ArrayBuffer === "function";
  }

  // -- the log ------------------------------------------------------------------------------------

  function clock() {
    var date = new Date();
    var pad = function (n, width) { n = String(n); while (n.length < (width || 2)) n = "0" + n; return n; };
    return pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()) + "." + pad(date.getMilliseconds(), 3);
  }

  function log(kind, text, rtt) {
    var item = document.createElement("li");
    item.className = "log-entry";
    item.setAttribute("data-kind", kind);
    var time = document.createElement("time");
    time.appendChild(document.createTextNode(clock()));
    var label = document.createElement("span");
    label.className = "log-kind";
    label.appendChild(document.createTextNode(kind));
    var body = document.createElement("span");
    body.className = "log-text";
    body.appendChild(document.createTextNode(text));
    item.appendChild(time);
    item.appendChild(label);
    item.appendChild(body);
    if (rtt !== undefined) {
      item.setAttribute("data-rtt", rtt.toFixed(1));
      var round = document.createElement("span");
      round.className = "log-rtt";
      round.appendChild(document.createTextNode(rtt.toFixed(1) + " ms round trip"));
      item.appendChild(round);
    }
    var list = $("log");
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_LOG_LINES) list.removeChild(list.lastChild);
  }

  function describe(data) {
    if (typeof data === "string") return "text " + JSON.stringify(data);
    var bytes = new Uint8Array(data);
    var hex = [];
    for (var i = 0; i < bytes.length && i < 32; i++) hex.push((bytes[i] < 16 ? "0" : "") + bytes[i].toString(16));
    return "binary, " + bytes.length + " bytes: " + hex.join(" ") + (bytes.length > 32 ? " …" : "");
  }

  // -- state --------------------------------------------------------------------------------------

  function showState(state, reason) {
    $("state").textContent = state;
    $("state").setAttribute("data-state", state);
    $("state-reason").textContent = reason || "";
    var open = state === "open";
    $("connect").disabled = state !== "closed";
    $("disconnect").disabled = state === "closed";
    $("send").disabled = !open;
    $("send-binary").disabled = !open || !canSendBinary();
  }

  // -- the socket ---------------------------------------------------------------------------------

  function connect(url) {
    if (!window.WebSocket) {
      log("error", "this browser has no WebSocket (and no Flash for the fallback)");
      return;
    }
    pending = [];
    showState("connecting", "to " + url);
    try {
      socket = new WebSocket(url);
    } catch (error) {
      log("error", "cannot connect to " + url + ": " + error);
      showState("closed", "");
      return;
    }
    socket.binaryType = "arraybuffer";
    var current = socket;
    socket.onopen = function () {
      if (current !== socket) return;
      showState("open", url);
      log("open", "connected to " + url);
    };
    socket.onmessage = function (event) {
      if (current !== socket) return;
      var sentAt = pending.shift();
      log("received", describe(event.data), sentAt === undefined ? undefined : now() - sentAt);
    };
    socket.onerror = function () {
      if (current !== socket) return;
      log("error", "WebSocket error");
    };
    socket.onclose = function (event) {
      if (current !== socket) return;
      socket = null;
      var reason = "code " + event.code + (event.reason ? " (" + event.reason + ")" : "") + (event.wasClean ? ", clean" : ", not clean");
      log("closed", reason);
      showState("closed", reason);
    };
  }

  function send(data) {
    if (!socket || socket.readyState !== 1) return;
    pending.push(now());
    socket.send(data);
    log("sent", describe(data));
  }

  // -- wiring -------------------------------------------------------------------------------------

  $("url").value = defaultUrl();
  $("websocket-kind").textContent = isFlashShim() ? "WebSocket: web-socket-js (Flash)" : window.WebSocket ? "WebSocket: native" : "no WebSocket";
  $("binary-hint").hidden = !isFlashShim();

  $("connect-form").addEventListener("submit", function (event) {
    event.preventDefault();
    connect($("url").value);
  });
  $("disconnect").addEventListener("click", function () {
    if (socket) socket.close();
  });
  $("send-form").addEventListener("submit", function (event) {
    event.preventDefault();
    send($("message").value);
  });
  $("send-binary").addEventListener("click", function () {
    send(new TextEncoder().encode($("message").value).buffer);
  });
  $("clear-log").addEventListener("click", function () {
    var list = $("log");
    while (list.firstChild) list.removeChild(list.firstChild);
  });
  showState("closed", "");
})();
