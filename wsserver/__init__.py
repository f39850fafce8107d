"""wsserver: a static web site and a WAMP v2 broker on one port, on Twisted and Autobahn."""

__version__ = "0.1.0"
