"""
permessage-deflate (RFC 7692) for the site's WebSockets, shaped for fan-out.

Theory of operation
-------------------
Autobahn parses a client's offers and calls the factory's ``perMessageCompressionAccept`` with
them; :func:`accept_deflate` (set by :func:`compression_options` when ``--compression deflate``)
accepts the first permessage-deflate offer with two demands of ours:

- ``server_no_context_takeover``, always (RFC 7692 7.1.1.1 lets a server add it unasked): every
  message we send is compressed on its own, so ONE compressed frame of an EVENT is good for every
  subscriber of its wire format, and the client may free its inflate window between messages.
- ``client_no_context_takeover``, always (7.1.1.2 lets a server add it unasked; the client must
  then compress each message on its own): we need no inflate state between a client's messages.

A client that asks for a smaller ``server_max_window_bits`` gets it; the window size then is part
of its wire format (``("websocket", "json", "deflate", 10)``), since a frame compressed with a
larger window may point further back than its inflater keeps.

What a connection holds. Autobahn's :class:`PerMessageDeflate` keeps a zlib compressor (262 KiB
at window 15, measured with tracemalloc) and a decompressor (65 KiB once used) per connection from
its first message on, for context takeover. :class:`OnDemandDeflate` (swapped in by :func:`use_on_demand_deflate` once the
handshake is done) drops each when its message ends, which the two demands above allow: an idle
compressed connection holds no zlib state, a client message holds a decompressor only while it is
being inflated. The outgoing frames of ``/ws`` and ``/stream`` do not use it at all: they come
from :class:`SharedDeflater`, one compressor per window size for the whole process, which resets
its history after each message (``Z_FULL_FLUSH``): about 9 us for a 1 KB JSON event, against
60 us for a fresh compressor (what most of that is: allocating and clearing its tables).

Limits. Autobahn bounds inflation by ``maxMessagePayloadSize`` (our ``--max-message-size``): it
inflates at most what is left of the message's budget and fails the connection with 1009 past it,
so a deflate bomb costs at most that much memory. Frames of ``--max-fragments`` and
``--max-frame-rate`` count as before (see bounds.py).

Small messages go out uncompressed (RSV1 clear, which RFC 7692 allows on a compressed
connection): under :data:`COMPRESS_MIN_BYTES` deflate saves a few bytes at best (a 60-byte
PUBLISHED comes out at 59, 100 bytes at 95) for the cost of a compression each.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

from autobahn.websocket.compress import PerMessageDeflate, PerMessageDeflateOffer, PerMessageDeflateOfferAccept

#: ``--compression`` values: negotiate permessage-deflate, or never.
DEFLATE, OFF = "deflate", "off"
COMPRESSION_CHOICES = (DEFLATE, OFF)
#: Payloads shorter than this go out uncompressed (see the module docstring).
COMPRESS_MIN_BYTES = 128
#: What a sync flush ends a message with; RFC 7692 7.2.1 has the sender remove it.
SYNC_TAIL = b"\x00\x00\xff\xff"


class DeflateAccept(PerMessageDeflateOfferAccept):
    """Autobahn's acceptance of an offer, saying ``server_no_context_takeover`` even when the client did not ask."""

    def get_extension_string(self) -> str:
        extension: str = super().get_extension_string()
        if not self.offer.request_no_context_takeover:
            extension += "; server_no_context_takeover"
        return extension


def accept_deflate(offers: Sequence[Any]) -> DeflateAccept | None:
    """Autobahn's ``perMessageCompressionAccept``: the first permessage-deflate offer, on our terms (see above)."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return DeflateAccept(offer, request_no_context_takeover=offer.accept_no_context_takeover,
                                 no_context_takeover=True)
    return None


def compression_options(compression: str) -> dict[str, Any]:
    """The Autobahn protocol options for ``--compression``."""
    return {"perMessageCompressionAccept": accept_deflate if compression == DEFLATE else (lambda offers: None)}


class OnDemandDeflate(PerMessageDeflate):
    """
    Autobahn's per-connection codec, holding zlib state only while a message is being compressed
    or inflated, where the negotiated no-context-takeover allows it.
    """

    def end_compress_message(self) -> bytes:
        data: bytes = super().end_compress_message()
        if self.server_no_context_takeover:
            self._compressor = None
        return data

    def end_decompress_message(self) -> None:
        super().end_decompress_message()
        if self.client_no_context_takeover:
            self._decompressor = None


def use_on_demand_deflate(protocol: Any) -> int | None:
    """
    Once a connection's handshake is done (``onOpen``): swap its negotiated codec, if any, for an
    :class:`OnDemandDeflate` (once: calling again only answers), and return the window bits its
    shared frames must be compressed with (``None``: it did not negotiate compression: frame plainly).
    """
    negotiated = protocol._perMessageCompress
    if not isinstance(negotiated, PerMessageDeflate):
        return None
    if type(negotiated) is PerMessageDeflate:
        protocol._perMessageCompress = OnDemandDeflate(
            negotiated._is_server, negotiated.server_no_context_takeover, negotiated.client_no_context_takeover,
            negotiated.server_max_window_bits, negotiated.client_max_window_bits, negotiated.mem_level,
            negotiated.max_message_size,
        )
        protocol.websocket_extensions_in_use = None  # Autobahn reads it only during the handshake
    if not negotiated.server_no_context_takeover:
        return None  # not our acceptance (accept_deflate always says it): frames go out uncompressed
    bits: int = negotiated.server_max_window_bits
    return bits


class SharedDeflater:
    """
    One compressor per window size for every connection of a process: :meth:`frame` a payload
    into one WebSocket frame, compressed (RSV1 set) when it is long enough, that every connection
    which negotiated that window may be sent.
    """

    def __init__(self, *, min_bytes: int = COMPRESS_MIN_BYTES) -> None:
        self.min_bytes = min_bytes
        self._compressors: dict[int, Any] = {}

    def compress(self, payload: bytes, window_bits: int) -> bytes:
        """``payload`` deflated on its own (no reference to earlier messages), without the sync flush's tail."""
        compressor = self._compressors.get(window_bits)
        if compressor is None:  # Autobahn negotiates 9 to 15 bits
            compressor = self._compressors[window_bits] = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits)
        # A full flush ends the message on a byte boundary (with SYNC_TAIL) and resets the history:
        # the next message refers to nothing before it, as server_no_context_takeover promises.
        data: bytes = compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH)
        return data[:-4]

    def frame(self, payload: bytes, is_binary: bool, window_bits: int | None) -> bytes:
        """
        ``payload`` as one frame for a connection that negotiated ``window_bits`` (``None``: no
        compression): compressed (RSV1 set) unless too short to be worth it, else plain.
        """
        if window_bits is None or len(payload) < self.min_bytes:
            return server_frame(payload, is_binary)
        compressed = self.compress(payload, window_bits)
        return frame_header(0x2 if is_binary else 0x1, len(compressed), rsv1=True) + compressed


#: The process's deflater: /ws and /stream compress with it, so a window size has one compressor.
DEFLATER = SharedDeflater()
#: Compressed wire formats, each one object for all its connections (see compressed_wire_format).
_COMPRESSED_WIRE_FORMATS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def compressed_wire_format(wire_format: tuple[Any, ...], window_bits: int) -> tuple[Any, ...]:
    """
    The wire format of a connection of ``wire_format`` (e.g. ``("websocket", "json")``) that
    negotiated deflate with ``window_bits``: one object for every such connection, as
    ``delivery.carry_out`` tests a recipient's format by identity before it asks its dict of
    encodings (at most a few dozen: formats times window sizes 9 to 15).
    """
    key = (*wire_format, DEFLATE, window_bits)
    return _COMPRESSED_WIRE_FORMATS.setdefault(key, key)


def server_frame(payload: bytes, is_binary: bool) -> bytes:
    """
    ``payload`` as one unmasked, unfragmented, uncompressed WebSocket data frame (RFC 6455 5.2),
    as Autobahn's PreparedMessage frames it, minus the object.
    """
    return frame_header(0x2 if is_binary else 0x1, len(payload), rsv1=False) + payload


def frame_header(opcode: int, length: int, *, rsv1: bool) -> bytes:
    """The header of a final, unmasked (server) frame of ``length`` payload bytes."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 0x10000:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)
