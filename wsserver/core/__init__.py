"""
The WAMP router as pure logic: realms, sessions, the broker (pattern subscriptions, retained
events, event history), the dealer, and the meta API.

Nothing in this package does I/O, reads a clock or draws a random number: a transport hands the
:class:`~wsserver.core.router.Router` decoded WAMP messages and writes out the actions it returns;
ids and the time come from callables the router is given. No module here imports Twisted (a test
enforces it).

Where things are: ``router`` (sessions' life, dispatch) -> ``realm`` (join, leave) -> ``broker``
(publish, subscribe; ``subscriptions`` and ``matching`` find who gets what, ``eventstore`` keeps
retained events and history within one budget; ``history`` decides which topics keep it and
answers resumes from a position) and ``dealer`` (calls; ``procedures`` are the router's own, named and
described with ``meta``). ``session`` holds the state table, ``decoding`` sorts bad input,
``actions`` are what comes out. Who may do what: ``policy`` (realms, roles, principals as plain
data), ``authentication`` (HELLO to identity), ``authorization`` (role and URI to allowed actions),
``limits`` (per-session publish rate and subscriptions), ``logins`` (failed logins per client
address and per authid).
"""
