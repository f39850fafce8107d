/*
 * wsclient: the small helper the wsserver pages use around AutobahnJS.
 *
 * What it adds to a bare autobahn.Connection:
 *   - the WebSocket URL is worked out from the page's own address (ws: or wss: to match http: or
 *     https:, same host and port, path /ws), so a page works wherever the server runs;
 *     ?url=... and ?realm=... in the page's address override it;
 *   - automatic reconnect that never gives up (a dashboard left open should come back by itself);
 *   - subscriptions are remembered, and made again after every reconnect, because a broker forgets
 *     a session's subscriptions when the session ends;
 *   - every state change is reported to the page as 'connecting', 'open' or 'closed' with details.
 *
 * Usage (AutobahnJS must already be loaded as the global `autobahn`):
 *
 *   import { WampClient, connectionSettings } from "/js/wsclient.js";
 *   const client = new WampClient({
 *     ...connectionSettings(),
 *     onState: (state, detail) => ...,        // 'connecting' | 'open' | 'closed'
 *     onNotice: (text) => ...,                // e.g. "re-subscribed after reconnect: com.example.a"
 *     onSubscription: (topic, status, error) => ...,   // 'pending' | 'active' | 'failed' | 'removed'
 *   });
 *   client.subscribe("com.example.topic", (event) => console.log(event.args, event.kwargs));
 *   client.open();
 */

export const DEFAULT_REALM = "realm1";
export const WEBSOCKET_PATH = "/ws";

// Reconnect quickly at first, then back off to at most 10 s between attempts.
const RECONNECT = {
  max_retries: -1, // forever
  initial_retry_delay: 1,
  retry_delay_growth: 1.5,
  max_retry_delay: 10,
  retry_delay_jitter: 0.1,
  retry_if_unreachable: true,
};

/**
 * The WebSocket URL and realm for a page at `location`: `{ url, realm }`.
 * `?url=` and `?realm=` in the page's query string take precedence.
 */
export function connectionSettings(location = window.location) {
  const params = new URLSearchParams(location.search);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return {
    url: params.get("url") || `${scheme}//${location.host}${WEBSOCKET_PATH}`,
    realm: params.get("realm") || DEFAULT_REALM,
  };
}

/** A one-line, human-readable reason for a 'closed' state detail. */
export function describeClose(detail) {
  const why = {
    lost: "connection lost",
    closed: "connection closed",
    unreachable: "server unreachable",
    unsupported: "this browser has no usable WebSocket",
  }[detail.reason] || detail.reason || "closed";
  let text = why;
  if (detail.wampReason) {
    text += ` (${detail.wampReason}${detail.message ? ": " + detail.message : ""})`;
  }
  if (detail.retryDelay != null) {
    text += `; reconnecting in ${detail.retryDelay.toFixed(1)} s`;
    if (typeof detail.retryCount === "number") text += ` (attempt ${detail.retryCount})`;
  } else if (!detail.byUser) {
    text += "; not reconnecting";
  }
  return text;
}

export class WampClient {
  /**
   * @param {object} options
   * @param {string} options.url      WebSocket URL of the WAMP endpoint
   * @param {string} options.realm    realm to join
   * @param {function} [options.onState]         (state, detail) on every state change
   * @param {function} [options.onNotice]        (text) for things worth telling the user
   * @param {function} [options.onSubscription]  (topic, status, error) when a subscription changes
   */
  constructor({ url, realm = DEFAULT_REALM, onState, onNotice, onSubscription } = {}) {
    if (typeof autobahn === "undefined") {
      throw new Error("AutobahnJS is not loaded: include /vendor/autobahn/autobahn.min.js first");
    }
    this.url = url;
    this.realm = realm;
    this.onState = onState || (() => {});
    this.onNotice = onNotice || (() => {});
    this.onSubscription = onSubscription || (() => {});
    this.state = "closed";
    this.session = null;
    this.timesJoined = 0;
    this.closedByUser = false;
    this.fallbackTimer = null;
    // topic -> { handler, subscription (while active), waiters: [{resolve, reject}] }
    this.subscriptions = new Map();

    this.connection = new autobahn.Connection({
      url,
      realm,
      // JSON only, so the WebSocket subprotocol is exactly "wamp.2.json"
      serializers: [new autobahn.serializer.JSONSerializer()],
      ...RECONNECT,
    });
    this.connection.onopen = (session, details) => this._opened(session, details);
    this.connection.onclose = (reason, details) => this._closed(reason, details);
  }

  /** Start connecting; reconnects by itself until close() is called. */
  open() {
    this.closedByUser = false;
    this._setState("connecting", { url: this.url, realm: this.realm });
    this.connection.open();
  }

  /** Leave the realm and stop reconnecting. */
  close() {
    this.closedByUser = true;
    clearTimeout(this.fallbackTimer);
    try {
      this.connection.close("wamp.close.normal", "page closed the connection");
    } catch (alreadyClosed) {
      // AutobahnJS throws when there is nothing to close; that is the state we want
    }
  }

  /** Topics the page has subscribed to, in the order it subscribed. */
  get topics() {
    return [...this.subscriptions.keys()];
  }

  /**
   * Subscribe `handler` to `topic`, now if open, else as soon as the session opens; remembered and
   * repeated after every reconnect. `handler` gets `{ topic, args, kwargs, details }`.
   * Resolves when the broker has acknowledged the subscription; rejects if it refused.
   */
  subscribe(topic, handler) {
    if (this.subscriptions.has(topic)) {
      return Promise.reject(new Error(`already subscribed to ${topic}`));
    }
    const entry = { handler, subscription: null, waiters: [] };
    this.subscriptions.set(topic, entry);
    const acknowledged = new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }));
    this.onSubscription(topic, "pending");
    if (this.session && this.session.isOpen) {
      this._subscribeOnBroker(topic, entry).catch(() => {});
    }
    return acknowledged;
  }

  /** Forget `topic`, and unsubscribe on the broker if the subscription is active. */
  async unsubscribe(topic) {
    const entry = this.subscriptions.get(topic);
    if (!entry) return;
    this.subscriptions.delete(topic);
    this.onSubscription(topic, "removed");
    if (entry.subscription && this.session && this.session.isOpen) {
      await this.session.unsubscribe(entry.subscription);
    }
  }

  /**
   * Publish one event and wait for the broker's acknowledgement.
   * `options` are WAMP publish options; note that AutobahnJS excludes the publisher from receiving
   * its own event unless `{ exclude_me: false }` is given.
   */
  async publish(topic, args = [], kwargs = {}, options = {}) {
    if (!this.session || !this.session.isOpen) {
      throw new Error("not connected");
    }
    return this.session.publish(topic, args, kwargs, { acknowledge: true, ...options });
  }

  // -- AutobahnJS callbacks ------------------------------------------------------------------------

  async _opened(session, details) {
    this.session = session;
    this.timesJoined += 1;
    const reconnected = this.timesJoined > 1;
    this._setState("open", {
      url: this.url,
      realm: this.realm,
      sessionId: session.id,
      protocol: details && details.transport ? details.transport.protocol : null,
      reconnected,
    });
    const topics = this.topics;
    const results = await Promise.allSettled(
      topics.map((topic) => this._subscribeOnBroker(topic, this.subscriptions.get(topic))),
    );
    if (!reconnected || session !== this.session) return;
    const failed = topics.filter((topic, index) => results[index].status === "rejected");
    if (topics.length === 0) {
      this.onNotice("reconnected; there were no subscriptions to restore");
    } else if (failed.length === 0) {
      this.onNotice(`re-subscribed after reconnect: ${topics.join(", ")}`);
    } else {
      this.onNotice(`reconnected, but re-subscribing failed for: ${failed.join(", ")}`);
    }
  }

  _closed(reason, details) {
    this.session = null;
    for (const [topic, entry] of this.subscriptions) {
      // the broker dropped these with the session; they are made again on the next open
      entry.subscription = null;
      this.onSubscription(topic, "pending");
    }
    let willRetry = details.will_retry;
    let retryDelay = willRetry ? details.retry_delay : null;
    // AutobahnJS stops retrying when the server ended the session with GOODBYE (for example
    // on shutdown); a page that did not ask to close should come back anyway.
    if (!willRetry && !this.closedByUser && reason !== "unsupported") {
      retryDelay = RECONNECT.initial_retry_delay;
      willRetry = true;
      clearTimeout(this.fallbackTimer);
      this.fallbackTimer = setTimeout(() => this._reopen(), retryDelay * 1000);
    }
    this._setState("closed", {
      reason,
      wampReason: details.reason || null,
      message: details.message || null,
      willRetry,
      retryDelay,
      retryCount: details.retry_count,
      byUser: this.closedByUser,
    });
    // returning true would cancel AutobahnJS's own reconnect; we never do unless asked to close
    return this.closedByUser;
  }

  _reopen() {
    if (this.closedByUser) return;
    try {
      this._setState("connecting", { url: this.url, realm: this.realm });
      this.connection.open();
    } catch (alreadyOpening) {
      // AutobahnJS reconnected by itself in the meantime
    }
  }

  async _subscribeOnBroker(topic, entry) {
    const session = this.session;
    try {
      const subscription = await session.subscribe(topic, (args, kwargs, details) =>
        entry.handler({ topic: (details && details.topic) || topic, args: args || [], kwargs: kwargs || {}, details }),
      );
      if (this.subscriptions.get(topic) !== entry) {
        // unsubscribed while the broker was answering
        if (session.isOpen) session.unsubscribe(subscription);
        return;
      }
      entry.subscription = subscription;
      this.onSubscription(topic, "active");
      entry.waiters.splice(0).forEach((waiter) => waiter.resolve(subscription));
    } catch (error) {
      if (this.session !== session) {
        throw error; // the connection dropped mid-request; the next open tries again
      }
      const message = describeError(error);
      this.subscriptions.delete(topic);
      this.onSubscription(topic, "failed", message);
      entry.waiters.splice(0).forEach((waiter) => waiter.reject(new Error(message)));
      throw error;
    }
  }

  _setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }
}

/** AutobahnJS rejects with autobahn.Error objects ({error, args, kwargs}); make them readable. */
export function describeError(error) {
  if (error && error.error) {
    return error.args && error.args.length ? `${error.error}: ${error.args.join(" ")}` : error.error;
  }
  return String(error && error.message ? error.message : error);
}
