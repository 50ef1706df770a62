"""A stand-in for a Trino coordinator on 127.0.0.1: just enough of Trino's HTTP client protocol for
the real `trino` Python client (DESIGN.md section 3: no Trino server can run on these machines).

It speaks `POST /v1/statement` (the SQL text as body), `GET <nextUri>` for the following pages and
`DELETE <nextUri>` for a cancel, and the prepared-statement flow the client uses to bind parameters:
`EXECUTE IMMEDIATE '<sql>' USING ...` (one request) or, with legacy prepared statements,
`PREPARE <name> FROM <sql>` (answered with `X-Trino-Added-Prepare`), `EXECUTE <name> USING ...` (the
client sends the statement back in `X-Trino-Prepared-Statement`) and `DEALLOCATE PREPARE <name>`.
Every query answers with the configured `result` (or `error`, or what the `responder` makes of its SQL)
in two pages after a first page without data, as a busy coordinator does. Optional TLS with a
self-signed certificate and HTTP basic auth let the tests run the client's authenticated code path
(the client refuses a password over plain HTTP).

Use it as a context manager: `with serve_trino(tmp_path, password="...") as trino: ...`.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tests.local_http import HOST, QuietHandler, serve_http

# Trino reports varchar without a length as varchar(2147483647) in the type signature.
UNBOUNDED_VARCHAR = 2147483647
_TYPE = re.compile(r"^(?P<base>[a-z ]+?)\s*(?:\((?P<args>[^()]*)\))?(?P<tz> with time zone)?$")
_PREPARE = re.compile(r"^PREPARE (?P<name>\w+) FROM (?P<sql>.*)$", re.DOTALL)
_EXECUTE = re.compile(r"^EXECUTE (?P<name>\w+) USING (?P<params>.*)$", re.DOTALL)
_DEALLOCATE = re.compile(r"^DEALLOCATE PREPARE (?P<name>\w+)$")


def type_signature(type_name: str) -> dict[str, Any]:
    """Trino's `typeSignature` for a simple type: `decimal(12,2)` -> rawType decimal, LONG args 12 and 2."""
    match = _TYPE.match(type_name)
    if match is None:
        raise ValueError(f"the stub cannot describe Trino type {type_name!r}")
    raw = match["base"] + (" with time zone" if match["tz"] else "")
    values = [int(arg) for arg in match["args"].split(",")] if match["args"] else []
    if raw == "varchar" and not values:
        values = [UNBOUNDED_VARCHAR]
    return {"rawType": raw, "arguments": [{"kind": "LONG", "value": value} for value in values]}


@dataclass
class StubResult:
    """What every query returns: (name, Trino type) per column and rows as Trino encodes them in
    JSON (dates, timestamps and decimals as strings)."""

    columns: list[tuple[str, str]]
    rows: list[list[Any]] = field(default_factory=list)

    def columns_json(self) -> list[dict[str, Any]]:
        return [{"name": n, "type": t, "typeSignature": type_signature(t)} for n, t in self.columns]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: str


@dataclass
class TrinoStub:
    """The server's state: what it answers and everything it received."""

    url: str = ""
    port: int = 0
    ca_file: str = ""  # the self-signed certificate, for the client's `verify` (TLS only)
    user: str | None = None  # with `password`: the basic-auth credentials it accepts, else none needed
    password: str | None = None
    result: StubResult = field(default_factory=lambda: StubResult(columns=[("_col0", "integer")], rows=[[1]]))
    queue: list[StubResult] = field(default_factory=list)  # answered first, one per query, before `result`
    error: dict[str, Any] | None = None  # a Trino `error` object: the query then FAILS with it
    # Answers a statement from its SQL (None: fall back to `queue`, then `result`), for clients such as
    # dbt that read catalog metadata and column types back from what they sent.
    responder: Callable[[str], StubResult | None] | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)  # the statements run, prepared ones resolved

    @property
    def statements(self) -> list[str]:
        """The SQL bodies POSTed to /v1/statement, in order."""
        return [r.body for r in self.requests if r.method == "POST"]


def _write_self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, so the client can verify it with `verify=<file>`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # What OpenSSL (strict X.509 checks) wants of a certificate that is both CA and server.
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital signature, cert sign, CRL sign
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "trino-cert.pem", folder / "trino-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def _handler(state: TrinoStub, scheme: str) -> type[BaseHTTPRequestHandler]:
    queries: dict[str, list[dict[str, Any]]] = {}  # query id -> pages still to serve
    lock = threading.Lock()

    class Handler(QuietHandler):
        def _record(self, body: str) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            with lock:
                state.requests.append(RecordedRequest(self.command, self.path, headers, body))

        def _authorized(self) -> bool:
            if state.password is None:
                return True
            expected = base64.b64encode(f"{state.user}:{state.password}".encode()).decode()
            return self.headers.get("Authorization") == f"Basic {expected}"

        def _send_json(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _unauthorized(self) -> None:
            body = b"Unauthorized"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="Trino"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _page(self, query_id: str, state_name: str, **extra: Any) -> dict[str, Any]:
            return {
                "id": query_id,
                "infoUri": f"{scheme}://{HOST}:{state.port}/ui/query.html?{query_id}",
                "stats": {"state": state_name, "queued": state_name == "QUEUED", "scheduled": True},
                "warnings": [],
                **extra,
            }

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            self._record(body)
            if self.path != "/v1/statement":
                self.send_error(404)
                return
            if not self._authorized():
                self._unauthorized()
                return
            query_id = datetime.now(UTC).strftime("%Y%m%d_%H%M%S_") + uuid.uuid4().hex[:5] + "_stub"
            sql = body.strip()
            if match := _PREPARE.match(sql):
                name, statement = match["name"], match["sql"]
                added = f"{name}={urllib.parse.quote_plus(statement)}"
                self._send_json(
                    self._page(query_id, "FINISHED", updateType="PREPARE"), {"X-Trino-Added-Prepare": added}
                )
                return
            if match := _DEALLOCATE.match(sql):
                self._send_json(
                    self._page(query_id, "FINISHED", updateType="DEALLOCATE"),
                    {"X-Trino-Deallocated-Prepare": match["name"]},
                )
                return
            if match := _EXECUTE.match(sql):
                prepared = dict(
                    (part.split("=", 1)[0].strip(), urllib.parse.unquote_plus(part.split("=", 1)[1].strip()))
                    for part in self.headers.get("X-Trino-Prepared-Statement", "").split(",")
                    if "=" in part
                )
                if match["name"] not in prepared:
                    self._send_json(
                        self._page(
                            query_id,
                            "FAILED",
                            error={
                                "message": f"Prepared statement not found: {match['name']}",
                                "errorCode": 5,
                                "errorName": "NOT_FOUND",
                                "errorType": "USER_ERROR",
                            },
                        )
                    )
                    return
                sql = f"{prepared[match['name']]} USING {match['params']}"
            with lock:
                state.executed.append(sql)
            if state.error is not None:
                self._send_json(self._page(query_id, "FAILED", error=state.error))
                return
            answered = state.responder(sql) if state.responder is not None else None
            with lock:
                result = answered or (state.queue.pop(0) if state.queue else state.result)
            columns, rows = result.columns_json(), result.rows
            half = len(rows) // 2
            queries[query_id] = [
                self._page(query_id, "RUNNING", columns=columns, data=rows[:half] or None),
                self._page(query_id, "FINISHED", columns=columns, data=rows[half:] or None),
            ]
            self._send_json(self._page(query_id, "QUEUED", nextUri=self._next_uri(query_id, 1)))

        def _next_uri(self, query_id: str, token: int) -> str:
            return f"{scheme}://{HOST}:{state.port}/v1/statement/executing/{query_id}/{token}"

        def do_GET(self) -> None:
            self._record("")
            parts = self.path.strip("/").split("/")
            if len(parts) != 5 or parts[:3] != ["v1", "statement", "executing"] or parts[3] not in queries:
                self.send_error(404)
                return
            if not self._authorized():
                self._unauthorized()
                return
            query_id, token = parts[3], int(parts[4])
            page = dict(queries[query_id][token - 1])
            if token < len(queries[query_id]):
                page["nextUri"] = self._next_uri(query_id, token + 1)
            self._send_json({key: value for key, value in page.items() if value is not None})

        def do_DELETE(self) -> None:
            self._record("")
            self.send_response(204)
            self.end_headers()

    return Handler


@contextmanager
def serve_trino(
    folder: Path, tls: bool = False, user: str | None = None, password: str | None = None
) -> Iterator[TrinoStub]:
    """Run the stub on a free port of 127.0.0.1 (HTTPS with a fresh self-signed certificate if `tls`)."""
    state = TrinoStub(user=user, password=password)
    scheme = "https" if tls else "http"
    context = None
    if tls:
        cert_file, key_file = _write_self_signed_certificate(folder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        state.ca_file = str(cert_file)
    with serve_http(_handler(state, scheme), context) as server:
        state.port = server.server_address[1]
        state.url = f"{scheme}://{HOST}:{state.port}"
        yield state
