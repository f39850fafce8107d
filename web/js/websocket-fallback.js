/*
 * websocket-fallback.js: WebSocket for browsers that have none, through web-socket-js (a Flash shim).
 *
 * Include it as a classic script in <head>, before every script that uses WebSocket:
 *
 *   <script src="/js/websocket-fallback.js"></script>
 *
 * In a browser with a native WebSocket it does nothing, and loads nothing. Otherwise it sets
 * WEB_SOCKET_SWF_LOCATION and writes two script tags, /vendor/web-socket-js/swfobject.js and
 * web_socket.js, right after itself: the parser runs them before any later script (AutobahnJS, the
 * page's modules), so those see window.WebSocket already defined by the shim. The shim's Flash movie
 * opens a plain TCP socket to the server, after asking it for a Flash socket policy (port 843, then
 * the page's own port, both served by wsserver).
 *
 * web_socket.js defines nothing when Flash Player 10+ is missing. The page then says so plainly, at
 * the top of <main>: <p id="websocket-unavailable">. What happened is recorded on <html> as
 * data-websocket="native" | "web-socket-js" | "unavailable".
 *
 * Written in ES5 on purpose: it runs first, in the oldest browsers the site meets.
 */
(function () {
  "use strict";

  var SHIM = "/vendor/web-socket-js/";
  var root = document.documentElement;

  if (!window.WebSocket && window.MozWebSocket) {
    window.WebSocket = window.MozWebSocket; // Firefox 6 to 10
  }
  if (window.WebSocket) {
    root.setAttribute("data-websocket", "native");
    return;
  }

  window.WEB_SOCKET_SWF_LOCATION = SHIM + "WebSocketMain.swf";
  // Parser-inserted, so they load and run in order before the parser goes on.
  document.write('<script src="' + SHIM + 'swfobject.js"><\/script>');
  document.write('<script src="' + SHIM + 'web_socket.js"><\/script>');

  function whenParsed(callback) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", callback);
    } else {
      callback();
    }
  }

  whenParsed(function () {
    if (window.WebSocket) {
      root.setAttribute("data-websocket", "web-socket-js");
      return;
    }
    root.setAttribute("data-websocket", "unavailable");
    var notice = document.createElement("p");
    notice.id = "websocket-unavailable";
    notice.className = "websocket-unavailable";
    notice.setAttribute("role", "alert");
    notice.appendChild(document.createTextNode(
      "This page needs Flash: your browser has no WebSocket, and the fallback this site uses " +
      "(web-socket-js) needs Adobe Flash Player 10 or later, which is not available here. " +
      "Open the page in a current browser, or enable Flash."
    ));
    var main = document.getElementsByTagName("main")[0] || document.body;
    main.insertBefore(notice, main.firstChild);
  });
})();
