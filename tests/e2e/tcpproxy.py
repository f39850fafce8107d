"""
A TCP relay on 127.0.0.1 that a test can cut, for "the network dropped" without stopping the server
(which would lose its history): ``cut()`` closes every relayed connection and turns new ones away
(accepted, then closed at once, as a dead path looks to a browser), ``restore()`` relays again;
``freeze()`` makes the connections open now carry nothing, without closing them (a path that died
silently: a half-open TCP connection, a NAT that forgot it), while new ones are relayed.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class CuttableProxy:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``upstream_port`` until cut; a context manager."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._frozen: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Drop every relayed connection, and turn new ones away until :meth:`restore`."""
        with self._lock:
            self._cut = True
            dropped, self._open = self._open, set()
        for sock in dropped:
            _close(sock)

    def freeze(self) -> None:
        """Relay nothing more, either way, on the connections open now; leave them open."""
        with self._lock:
            self._frozen |= self._open

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
            if refused:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if source not in self._frozen:
                    sink.sendall(chunk)
        except OSError:
            pass
        for sock in (source, sink):
            _close(sock)
            with self._lock:
                self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
