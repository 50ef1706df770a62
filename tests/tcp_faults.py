"""A TCP proxy on 127.0.0.1 that relays to a real server and resets the connection the moment the client
sends chosen bytes: a network failure at an exact point, e.g. the source database going away once the
extraction query is on the wire, after the guard's probe found it up. Client and server are real; only
the wire between them breaks."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class ResettingProxy:
    """Relays to `upstream`, (host, port) or a Unix socket path (embedded PostgreSQL listens on one); the
    first `times` connections whose client sends bytes containing `trigger` are reset instead."""

    def __init__(self, upstream: tuple[str, int] | str, trigger: bytes, times: int = 1):
        self.upstream = upstream
        self.trigger = trigger
        self.remaining = times
        self.resets = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.upstream)
            return server
        return socket.create_connection(self.upstream)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # shut down: the proxy is stopping
                return
            server = self._connect_upstream()
            threading.Thread(target=self._relay, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._relay, args=(server, client, False), daemon=True).start()

    def _take_reset(self, data: bytes) -> bool:
        with self._lock:
            if self.remaining and self.trigger in data:
                self.remaining -= 1
                self.resets += 1
                return True
            return False

    def _relay(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and self._take_reset(data):
                    # SO_LINGER 0: close sends RST, which the client sees as 'connection reset by peer'.
                    source.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    @contextmanager
    def running(self) -> Iterator[ResettingProxy]:
        acceptor = threading.Thread(target=self._serve, daemon=True)
        acceptor.start()
        try:
            yield self
        finally:
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self._listener.close()
            acceptor.join(timeout=5)
