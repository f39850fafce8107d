/*
 * The little of XMLHttpRequest that AutobahnJS's long-poll transport uses (lib/util.js http_post),
 * over Node's http module: Node has fetch but no XMLHttpRequest. `require("./xhr.js")` installs it
 * as the global XMLHttpRequest if there is none.
 *
 * Supported: open(method, url), setRequestHeader, send(body), timeout + ontimeout,
 * onreadystatechange (readyState 4 only), status, statusText, responseText. withCredentials is
 * accepted and means nothing here (no cookies).
 */
"use strict";

const http = require("http");

class XMLHttpRequest {
  constructor() {
    this.readyState = 0;
    this.status = 0;
    this.statusText = "";
    this.responseText = "";
    this.timeout = 0;
    this.withCredentials = false;
    this.onreadystatechange = null;
    this.ontimeout = null;
    this._headers = {};
  }

  open(method, url) {
    this._method = method;
    this._url = new URL(url);
    this.readyState = 1;
  }

  setRequestHeader(name, value) {
    this._headers[name] = value;
  }

  send(body) {
    const data = body == null ? "" : Buffer.from(String(body), "utf8");
    const request = http.request(this._url, {
      method: this._method,
      headers: { ...this._headers, "Content-Length": data.length },
    });
    let timer = null;
    if (this.timeout > 0) {
      timer = setTimeout(() => {
        request.destroy();
        this.readyState = 4;
        if (this.ontimeout) this.ontimeout();
      }, this.timeout);
    }
    request.on("response", (response) => {
      const chunks = [];
      response.on("data", (chunk) => chunks.push(chunk));
      response.on("end", () => {
        clearTimeout(timer);
        this.status = response.statusCode;
        this.statusText = response.statusMessage;
        this.responseText = Buffer.concat(chunks).toString("utf8");
        this.readyState = 4;
        if (this.onreadystatechange) this.onreadystatechange();
      });
    });
    request.on("error", () => {
      if (this.readyState === 4) return; // timed out: already reported
      clearTimeout(timer);
      this.status = 0; // as a browser reports a network error
      this.readyState = 4;
      if (this.onreadystatechange) this.onreadystatechange();
    });
    request.end(data);
  }
}

if (typeof globalThis.XMLHttpRequest === "undefined") {
  globalThis.XMLHttpRequest = XMLHttpRequest;
}
module.exports = XMLHttpRequest;
