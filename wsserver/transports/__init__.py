"""
Twisted adapters that carry WAMP sessions to and from the core router.

Every transport's connection object is the ``peer`` of its core session, and offers what
:func:`wsserver.delivery.carry_out` needs: ``wire_format`` (a key: connections with equal keys
accept the same encoded bytes), ``encode(message)``, ``write_encoded(data)`` and
``close_transport(reason, detail)``.
"""
