"""
The broker as pure logic: realms, sessions, subscriptions, topic matching, routing.

Nothing in this package does I/O, reads a clock or draws a random number: a transport hands the
:class:`~wsserver.core.router.Router` decoded WAMP messages and writes out the actions it returns.
No module here imports Twisted (a test enforces it).
"""
