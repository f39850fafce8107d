/*
 * wsclient: the small helper the wsserver pages use around AutobahnJS.
 *
 * What it adds to a bare autobahn.Connection:
 *   - the WebSocket URL is worked out from the page's own address (ws: or wss: to match http: or
 *     https:, same host and port, path /ws), so a page works wherever the server runs;
 *     ?url=... and ?realm=... in the page's address override it;
 *   - a fallback to WAMP over HTTP long-poll (/lp next to /ws; ?longpoll=... overrides it) when
 *     the WebSocket does not get through: its upgrade fails (a proxy that strips Upgrade), or it
 *     has not joined the realm within WEBSOCKET_WAIT_MS (a proxy that swallows its frames).
 *     AutobahnJS does not do this itself (autobahn-js issue #191: it tries the next transport
 *     only when creating one throws, and a WebSocket never throws). `client.transport` says which
 *     is in use ("WebSocket" or "long-poll"), and so does the 'open' state's detail;
 *   - automatic reconnect that never gives up (a dashboard left open should come back by itself),
 *     each time WebSocket first again, so a page on long-poll returns to WebSocket when it can;
 *   - subscriptions are remembered, and made again after every reconnect, because a broker forgets
 *     a session's subscriptions when the session ends;
 *   - every state change is reported to the page as 'connecting', 'open' or 'closed' with details;
 *   - never miss an event: a subscription made with `{ resume: true }` on a server that keeps history
 *     for its topic (`--history-size`, `history` rules in `--config`, `--demo` for the demo's
 *     topics) comes back after a reconnect with what was published meanwhile. See "Resume" below.
 *
 * Resume. Every EVENT of a topic with history carries its position, `details._epoch` (a life of the
 * topic's history) and `details._seq` (one more per publication). The client keeps the last
 * position it delivered per concrete topic (for a prefix or wildcard subscription: each topic it
 * has seen). On every reconnect it
 *   1. subscribes first, and holds back the live events that arrive from then on;
 *   2. calls wsserver.history.since(topic, epoch, seq) for each topic it has a position for;
 *   3. delivers the events each answer returns, in publication order, marked `event.recovered`;
 *   4. then delivers the held-back live events, but those it has delivered already (same epoch,
 *      `_seq` not greater than the topic's position): no gap, no duplicate.
 * Then it tells the page, through the subscription's `onResume`, `{ topic, recovered, missed }`:
 * `recovered: true` when every topic came back complete (`missed` events were delivered), else
 * `recovered: false` with a `reason` (the server restarted, too much was missed, the topic keeps no
 * history...): the page must then reload its state, as if it had just opened. An exact
 * subscription also learns its topic's position right after its first subscribe, so it resumes
 * even if no event came before the drop; a prefix or wildcard subscription resumes the topics it
 * has seen, and cannot know of a topic first published while it was away.
 *
 * Usage (AutobahnJS must already be loaded as the global `autobahn`):
 *
 *   import { WampClient, connectionSettings } from "/js/wsclient.js";
 *   const client = new WampClient({
 *     ...connectionSettings(),                // { url, longPollUrl, realm }
 *     onState: (state, detail) => ...,        // 'connecting' | 'open' | 'closed'; detail.transport
 *     onNotice: (text) => ...,                // e.g. "re-subscribed after reconnect: com.example.a"
 *     onSubscription: (topic, status, error) => ...,   // 'pending' | 'active' | 'failed' | 'removed'
 *   });
 *   client.subscribe("com.example.topic", (event) => console.log(event.args, event.kwargs));
 *   client.subscribe("com.example.ticker", showTick, {
 *     resume: true,                           // after a reconnect, deliver what was missed first
 *     onResume: ({ recovered, missed }) => recovered ? showMissed(missed) : reloadEverything(),
 *   });
 *   client.open();
 */

export const DEFAULT_REALM = "realm1";
export const WEBSOCKET_PATH = "/ws";
export const LONG_POLL_PATH = "/lp";
/** The router procedure a resuming subscription asks for what it missed (see "Resume" above). */
export const HISTORY_SINCE = "wsserver.history.since";
/** The transports, as `client.transport` and the 'open' detail name them. */
export const WEBSOCKET = "WebSocket";
export const LONG_POLL = "long-poll";

// How long a WebSocket may take to open and join before long-poll is tried instead: a local
// server joins in milliseconds, a distant one in well under a second; a proxy that accepts the
// upgrade and then holds the frames never does.
export const WEBSOCKET_WAIT_MS = 4000;

// WAMP's EVENT message type: see keepEventPositions.
const EVENT = 36;

// Reconnect quickly at first, then back off to at most 10 s between attempts.
const RECONNECT = {
  initial_retry_delay: 1,
  retry_delay_growth: 1.5,
  max_retry_delay: 10,
  retry_delay_jitter: 0.1,
};

/**
 * The WebSocket URL, long-poll URL and realm for a page at `location`: `{ url, longPollUrl, realm }`.
 * `?url=`, `?longpoll=` and `?realm=` in the page's query string take precedence; without
 * `?longpoll=`, long-poll lives next to the WebSocket URL (see longPollUrlFor).
 */
export function connectionSettings(location = window.location) {
  const params = new URLSearchParams(location.search);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = params.get("url") || `${scheme}//${location.host}${WEBSOCKET_PATH}`;
  return {
    url,
    longPollUrl: params.get("longpoll") || longPollUrlFor(url),
    realm: params.get("realm") || DEFAULT_REALM,
  };
}

/** The long-poll URL of the server at WebSocket URL `url`: http: or https:, same host and port, /lp. */
export function longPollUrlFor(url) {
  const parsed = new URL(url);
  return `${parsed.protocol === "wss:" ? "https:" : "http:"}//${parsed.host}${LONG_POLL_PATH}`;
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
   * @param {string} [options.longPollUrl]  long-poll URL to fall back to (none: WebSocket only)
   * @param {string} options.realm    realm to join
   * @param {function} [options.onState]         (state, detail) on every state change
   * @param {function} [options.onNotice]        (text) for things worth telling the user
   * @param {function} [options.onSubscription]  (topic, status, error) when a subscription changes
   */
  constructor({ url, longPollUrl = null, realm = DEFAULT_REALM, onState, onNotice, onSubscription } = {}) {
    if (typeof autobahn === "undefined") {
      throw new Error("AutobahnJS is not loaded: include /vendor/autobahn/autobahn.min.js first");
    }
    this.url = url;
    this.longPollUrl = longPollUrl;
    this.realm = realm;
    this.onState = onState || (() => {});
    this.onNotice = onNotice || (() => {});
    this.onSubscription = onSubscription || (() => {});
    this.state = "closed";
    /** The transport of the open session: WEBSOCKET or LONG_POLL; null while not open. */
    this.transport = null;
    this.session = null;
    this.timesJoined = 0;
    this.closedByUser = false;
    // One autobahn.Connection per attempt, without AutobahnJS's own retries: this client
    // chooses the transport of every attempt.
    this.connection = null;
    this.retryCount = 0;
    this.retryTimer = null;
    this.giveUpTimer = null;
    // topic -> { handler, match, retained, resume, onResume, subscription (while active), waiters: [{resolve, reject}],
    //           positions: concrete topic -> {epoch, seq} (resume only), held: live events held back while resuming }
    this.subscriptions = new Map();
  }

  /** Start connecting; reconnects by itself until close() is called. */
  open() {
    this.closedByUser = false;
    this.retryCount = 0;
    this._connect(WEBSOCKET);
  }

  /** Leave the realm and stop reconnecting. */
  close() {
    this.closedByUser = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.giveUpTimer);
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
   * repeated after every reconnect. `handler` gets `{ topic, args, kwargs, details }` (and
   * `recovered: true` on an event missed while disconnected).
   * `options.match`: "exact" (default), "prefix" or "wildcard". `options.retained`: on every
   * (re)subscribe, the broker first sends the topic's retained event (the last one published with
   * `retain: true`), so a page shows the current value at once. `options.resume`: deliver what was
   * missed after every reconnect, then call `options.onResume({ topic, recovered, missed, reason })`;
   * on `recovered: false` the page must reload its state (see "Resume" at the top).
   * Resolves when the broker has acknowledged the subscription; rejects if it refused.
   */
  subscribe(topic, handler, { match = "exact", retained = false, resume = false, onResume = null } = {}) {
    if (this.subscriptions.has(topic)) {
      return Promise.reject(new Error(`already subscribed to ${topic}`));
    }
    const entry = {
      handler, match, retained, resume, onResume: onResume || (() => {}), subscription: null, waiters: [],
      positions: new Map(), held: null, everActive: false,
    };
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

  /**
   * Call `procedure` and wait for its result: as AutobahnJS gives it, the single value when the
   * callee answered one argument and no kwargs, else an object with `args` and `kwargs`.
   */
  async call(procedure, args = [], kwargs = {}) {
    if (!this.session || !this.session.isOpen) {
      throw new Error("not connected");
    }
    return this.session.call(procedure, args, kwargs);
  }

  // -- one attempt, over one transport --------------------------------------------------------------

  _connect(transport) {
    clearTimeout(this.retryTimer);
    const url = transport === WEBSOCKET ? this.url : this.longPollUrl;
    this._setState("connecting", { url, realm: this.realm, transport });
    const connection = new autobahn.Connection({
      ...(transport === WEBSOCKET ? { url } : { transports: [{ type: "longpoll", url }] }),
      realm: this.realm,
      // JSON only, so the WebSocket subprotocol is exactly "wamp.2.json"
      serializers: [new autobahn.serializer.JSONSerializer()],
      max_retries: 0,
      retry_if_unreachable: false,
    });
    this.connection = connection;
    let joined = false;
    connection.onopen = (session, details) => {
      if (connection !== this.connection) return;
      joined = true;
      clearTimeout(this.giveUpTimer);
      this._opened(session, details, transport);
    };
    connection.onclose = (reason, details) => {
      if (connection === this.connection) {
        clearTimeout(this.giveUpTimer);
        this._closed(reason, details, transport, joined);
      }
      return true; // no retry by AutobahnJS: _closed decides
    };
    if (transport === WEBSOCKET && this.longPollUrl) {
      this.giveUpTimer = setTimeout(() => {
        // The upgrade hangs, or the frames do not come through: leave this WebSocket for long-poll.
        this.connection = null;
        try {
          connection.close();
        } catch (alreadyClosed) {
          // it closed at this very moment; its onclose is ignored either way
        }
        this._connect(LONG_POLL);
      }, WEBSOCKET_WAIT_MS);
    }
    connection.open();
  }

  async _opened(session, details, transport) {
    keepEventPositions(session);
    if (transport === LONG_POLL) oneRequestAtATime(session);
    this.session = session;
    this.transport = transport;
    this.retryCount = 0;
    this.timesJoined += 1;
    const reconnected = this.timesJoined > 1;
    this._setState("open", {
      url: transport === WEBSOCKET ? this.url : this.longPollUrl,
      realm: this.realm,
      sessionId: session.id,
      protocol: details && details.transport ? details.transport.protocol : null,
      transport,
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

  _closed(reason, details, transport, joined) {
    this.session = null;
    this.transport = null;
    for (const [topic, entry] of this.subscriptions) {
      // the broker dropped these with the session; they are made again on the next open
      entry.subscription = null;
      this.onSubscription(topic, "pending");
    }
    // A WebSocket that never joined, and was not refused by the router (an ABORT names a
    // reason), did not get through: try long-poll at once.
    if (transport === WEBSOCKET && !joined && !details.reason && this.longPollUrl && !this.closedByUser) {
      this._connect(LONG_POLL);
      return;
    }
    // Otherwise try again later, WebSocket first; also after the server ended the session with
    // GOODBYE (for example on shutdown): a page that did not ask to close should come back.
    let retryDelay = null;
    if (!this.closedByUser && reason !== "unsupported") {
      retryDelay = Math.min(
        RECONNECT.max_retry_delay,
        RECONNECT.initial_retry_delay * RECONNECT.retry_delay_growth ** this.retryCount,
      );
      retryDelay *= 1 + (Math.random() * 2 - 1) * RECONNECT.retry_delay_jitter;
      this.retryCount += 1;
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.closedByUser || this._connect(WEBSOCKET), retryDelay * 1000);
    }
    this._setState("closed", {
      reason,
      wampReason: details.reason || null,
      message: details.message || null,
      transport,
      willRetry: retryDelay !== null,
      retryDelay,
      retryCount: this.retryCount,
      byUser: this.closedByUser,
    });
  }

  async _subscribeOnBroker(topic, entry) {
    const session = this.session;
    const resubscribed = entry.resume && entry.everActive;
    // Live events wait while the position is asked for: they come after what was missed.
    if (entry.resume) entry.held = [];
    try {
      const subscription = await session.subscribe(topic, (args, kwargs, details) => {
        details = details || {};
        if (session.eventPosition) {
          details._epoch = session.eventPosition.epoch;
          details._seq = session.eventPosition.seq;
        }
        const event = { topic: details.topic || topic, args: args || [], kwargs: kwargs || {}, details };
        if (!entry.resume) entry.handler(event);
        else if (entry.held) entry.held.push(event);
        else this._deliver(entry, event);
      }, {
        ...(entry.match === "exact" ? {} : { match: entry.match }),
        ...(entry.retained ? { get_retained: true } : {}),
      });
      if (this.subscriptions.get(topic) !== entry) {
        // unsubscribed while the broker was answering
        if (session.isOpen) session.unsubscribe(subscription);
        return;
      }
      entry.subscription = subscription;
      entry.everActive = true;
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
    if (entry.resume) {
      await (resubscribed ? this._resume(session, topic, entry) : this._learnPosition(session, topic, entry));
    }
  }

  // -- resume (see "Resume" at the top) ------------------------------------------------------------

  /** Hand `event` to the page unless it was delivered already; keep its topic's position. */
  _deliver(entry, event) {
    const { _epoch: epoch, _seq: seq } = event.details;
    if (typeof epoch === "string" && Number.isInteger(seq)) {
      const known = entry.positions.get(event.topic);
      if (known && known.epoch === epoch && seq <= known.seq) return;
      entry.positions.set(event.topic, { epoch, seq });
    }
    entry.handler(event);
  }

  /**
   * After the first subscribe of an exact topic: where its history stands (a since() with no
   * epoch is never recovered, and answers the topic's position), so that a drop before the first
   * event is resumed too. The held-back events all came before the answer: delivered as they are.
   */
  async _learnPosition(session, topic, entry) {
    let answer = null;
    if (entry.match === "exact") {
      try {
        answer = (await session.call(HISTORY_SINCE, [topic, "", 0])).kwargs;
      } catch (error) {
        if (this.session === session) this.onNotice(`${topic}: cannot resume after a reconnect (${describeError(error)})`);
      }
    }
    if (this.session !== session) return;
    this._releaseHeld(entry);
    if (answer && !entry.positions.has(topic)) entry.positions.set(topic, { epoch: answer.epoch, seq: answer.top });
  }

  /** After a reconnect: deliver what each known topic missed, then the held-back live events; tell the page. */
  async _resume(session, topic, entry) {
    const topics = [...entry.positions.keys()];
    if (topics.length === 0) {
      // No event came before the drop, and the topic's position is unknown (it keeps no history?)
      await this._learnPosition(session, topic, entry);
      if (this.session === session) this._resumed(entry, { topic, recovered: false, missed: 0, reason: "no position to resume from" });
      return;
    }
    const answers = await Promise.allSettled(topics.map((concrete) => {
      const { epoch, seq } = entry.positions.get(concrete);
      return session.call(HISTORY_SINCE, [concrete, epoch, seq]);
    }));
    if (this.session !== session) return; // dropped again: the next open resumes from the same positions
    const missed = [];
    const reasons = [];
    answers.forEach((settled, index) => {
      const concrete = topics[index];
      if (settled.status === "rejected") {
        reasons.push(`${concrete}: ${describeError(settled.reason)}`);
        return;
      }
      const { recovered, epoch, top, events } = settled.value.kwargs;
      if (recovered) {
        for (const { seq, args, kwargs, timestamp } of events) {
          const details = { topic: concrete, _epoch: epoch, _seq: seq, timestamp };
          missed.push({ topic: concrete, args: args || [], kwargs: kwargs || {}, details, recovered: true });
        }
      } else {
        const lost = epoch === entry.positions.get(concrete).epoch ? "more was missed than the server keeps or returns at once" : "the server lost its history";
        reasons.push(`${concrete}: ${lost}`);
        // What came before is lost to this page; live events after `top` still follow.
        entry.positions.set(concrete, { epoch, seq: top });
      }
    });
    // One topic's events are in order; across topics, the router's timestamps order them.
    missed.sort((a, b) => (a.details.timestamp < b.details.timestamp ? -1 : a.details.timestamp > b.details.timestamp ? 1 : 0));
    missed.forEach((event) => this._deliver(entry, event));
    this._releaseHeld(entry);
    const recovered = reasons.length === 0;
    this._resumed(entry, { topic, recovered, missed: missed.length, reason: recovered ? null : reasons.join("; ") });
  }

  /** Tell the page how the resume of `entry` went: a notice, and its onResume. */
  _resumed(entry, result) {
    const { topic, recovered, missed, reason } = result;
    this.onNotice(recovered
      ? `${topic}: resumed, ${missed} missed event${missed === 1 ? "" : "s"} recovered`
      : `${topic}: reloaded (${reason})`);
    entry.onResume(result);
  }

  _releaseHeld(entry) {
    const held = entry.held || [];
    entry.held = null;
    held.forEach((event) => this._deliver(entry, event));
  }

  _setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }
}

/**
 * Make `details._epoch` and `details._seq` of every EVENT reach the subscription handlers of
 * `session`. AutobahnJS (22 in the browser, 26 on npm) hands a handler an Event object with the
 * spec's keys only (publisher, topic, retained...) and drops the rest; so its EVENT processing is
 * wrapped to leave the position in `session.eventPosition` while it calls the handlers, which it
 * does synchronously; the handler copies it onto the Event object. Without this hook (a
 * future AutobahnJS), events carry no position and every resume answers "reloaded": never a gap
 * presented as recovered.
 */
function keepEventPositions(session) {
  const processEvent = session._MESSAGE_MAP && session._MESSAGE_MAP[EVENT];
  if (typeof processEvent !== "function") return;
  session._MESSAGE_MAP[EVENT] = (message) => {
    const { _epoch: epoch, _seq: seq } = message[3] || {};
    session.eventPosition = typeof epoch === "string" && Number.isInteger(seq) ? { epoch, seq } : null;
    try {
      processEvent(message);
    } finally {
      session.eventPosition = null;
    }
  };
}

/**
 * Make `session` send its requests (subscribe, unsubscribe, call, publish) one at a time, each when
 * the previous one is answered. Over long-poll every message is an HTTP request of its own, a
 * browser opens at most six connections to one host (for all its tabs), and the server holds a
 * /send, unanswered, while answers wait for the client's next /receive (as it stops reading a
 * WebSocket whose client does not read). A page that sent six requests at once (a few
 * subscriptions) would fill every connection with held /sends, leaving none for the /receive
 * that would release them: nothing moves until AutobahnJS gives up on its requests after 12 s.
 * One at a time, a page needs two connections, its /receive and one /send.
 */
function oneRequestAtATime(session) {
  let previous = Promise.resolve();
  for (const name of ["subscribe", "unsubscribe", "call", "publish"]) {
    const send = session[name].bind(session);
    session[name] = (...args) => {
      const answered = previous.then(() => send(...args));
      previous = answered.catch(() => {});
      return answered;
    };
  }
}

/** AutobahnJS rejects with autobahn.Error objects ({error, args, kwargs}); make them readable. */
export function describeError(error) {
  if (error && error.error) {
    return error.args && error.args.length ? `${error.error}: ${error.args.join(" ")}` : error.error;
  }
  return String(error && error.message ? error.message : error);
}
