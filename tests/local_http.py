"""Serve a test stand-in (webhook, Vault, Trino) over HTTP on a free port of 127.0.0.1.

The stand-ins differ in what they answer, not in how they are started and stopped; that is here once.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output free of one access-log line per request."""

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve_http(
    handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> Iterator[ThreadingHTTPServer]:
    """Run `handler` in a background thread until the block ends; `tls` wraps the socket for HTTPS.
    The server's port is `server.server_address[1]`."""
    server = ThreadingHTTPServer((HOST, 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
