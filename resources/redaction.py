"""The one scrubber of secrets: every text that leaves a run (tags, metadata, logs, alerts, errors).

Secrets are masked two ways. By form: URL passwords (`scheme://user:pass@host`, also when the password
holds an `@`, and `?password=` in the query), `name=value` / `name: value` / `{'name': 'value'}` where
the name looks secret (`PGPASSWORD`, `client_secret`, `aws_secret_access_key`, `api_key`, ...),
`Authorization` headers with their scheme (Basic, Bearer, ...), bearer tokens, Vault tokens and Slack
hooks. By value: every secret read through the secrets resource in this process is registered here
(`register_secret`) and masked wherever it appears, as are the values of environment variables whose
names look secret (`resources.settings.secret_values`); a Vault value has no telltale form, so only
its value can find it. This module imports nothing of the platform but settings, so any layer may use it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit, urlunsplit

from resources.settings import MIN_SECRET_LENGTH, secret_values

MASK = "***"
# Parts of a name that make its value a secret (in `name=value`, dicts, query strings, headers).
SECRET_WORDS = (
    r"password|passwd|pwd|passphrase|secret|token|credentials?|authorization|"
    r"api[_-]?key|access[_-]?key|private[_-]?key|account[_-]?key|session[_-]?key"
)
# A name is one identifier-like word that contains a secret word: PGPASSWORD, client_secret,
# aws_secret_access_key, s3.secret-access-key, X-Api-Key.
_SECRET_NAME = rf"[\w.-]*(?:{SECRET_WORDS})[\w.-]*"
_AUTH_SCHEMES = r"(?:basic|bearer|token|digest|negotiate|aws4-hmac-sha256|hmac)"
_ASSIGNMENT = re.compile(
    rf"(?P<name>(?P<nq>['\"]?)\b{_SECRET_NAME}(?P=nq))(?P<sep>\s*(?:=|:|=>)\s*)"
    rf"(?P<value>(?:{_AUTH_SCHEMES}\s+)?(?:\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s'\"&,;)}}\]]+))",
    re.IGNORECASE,
)
# Userinfo of a URL up to the LAST `@` before the host, so a password holding `@` is masked whole.
_URL_PASSWORD = re.compile(
    r"(?P<prefix>\b[A-Za-z][\w+.-]*://[^:/?#@\s]*):(?P<password>[^/?#\s]+)@(?=[^@/?#\s]*(?:[/?#\s'\"),;\]>]|$))"
)
_BEARER = re.compile(r"\b(?P<scheme>bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_KNOWN_TOKENS = (
    re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{8,}"),  # Vault tokens
    re.compile(r"(?<=hooks\.slack\.com/services/)[\w/]+"),  # Slack webhook URLs carry their credential
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
)

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask `value` from now on in this process (called by the secrets resource for every value it reads)."""
    if value is None or len(value.strip()) < MIN_SECRET_LENGTH:
        return
    with _lock:
        _registered.add(value)
        _registered.add(value.strip())


def known_secret_values(extra: Iterable[str] = ()) -> frozenset[str]:
    """Every value to mask: registered secrets, secret-looking environment variables, and `extra`."""
    with _lock:
        values = set(_registered)
    values.update(v for v in extra if v and len(v.strip()) >= MIN_SECRET_LENGTH)
    values.update(secret_values())
    # The same secret as it appears inside URLs and form bodies.
    values.update({encoded for v in list(values) for encoded in (quote(v, safe=""), quote_plus(v))})
    return frozenset(values)


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every secret masked: known values first (longest first, so a secret containing
    another goes whole), then every secret form listed in the module docstring."""
    if not text:
        return text
    for value in sorted(known_secret_values(extra), key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['prefix']}:{MASK}@", text)
    text = _ASSIGNMENT.sub(_mask_assignment, text)
    text = _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)
    for pattern in _KNOWN_TOKENS:
        text = pattern.sub(MASK, text)
    return text


def _mask_assignment(match: re.Match) -> str:
    """`name: ***`, keeping the value's quotes and an auth scheme (`Authorization: Bearer ***`)."""
    value = match["value"]
    quote_char = value[0] if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) > 1 else ""
    inner = value[1:-1] if quote_char else value
    scheme = re.match(rf"{_AUTH_SCHEMES}\s+", inner, re.IGNORECASE)
    return f"{match['name']}{match['sep']}{quote_char}{scheme[0] if scheme else ''}{MASK}{quote_char}"


def _is_secret_name(name: str) -> bool:
    return re.fullmatch(_SECRET_NAME, name, re.IGNORECASE) is not None


def split_url_password(url: str) -> tuple[str, str | None]:
    """(`url` without its password, the password or None): the password of the userinfo
    (`user:pass@host`) or of a `password=` query parameter. Used to move a password given in a URL
    setting out of resource config and into the secrets resource."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_query = [value for name, value in query if name.lower() == "password" and value]
    if not parts.password and not in_query:  # `user:@host` (empty) is no password
        return url, None
    netloc, query_text = parts.netloc, parts.query
    if parts.password:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{host}"
    if in_query:
        query_text = urlencode([(name, value) for name, value in query if name.lower() != "password"])
    password = unquote(parts.password) if parts.password else in_query[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, query_text, parts.fragment)), password


def strip_url_credentials(url: str) -> tuple[str, list[str]]:
    """(`url` without credentials, what was removed): the userinfo (`user:pass@`, or a bare token as
    `token@`) and every query parameter whose name looks secret (`api_key=`, `access_token=`). For
    endpoints whose credential has its own secret name: a URL setting must never carry one."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    removed = [f"query parameter {name}" for name, _ in query if _is_secret_name(name)]
    netloc = parts.netloc
    if "@" in netloc:
        removed.insert(0, "user info")
        netloc = netloc.rpartition("@")[2]
    if not removed:
        return url, []
    kept = urlencode([(name, value) for name, value in query if not _is_secret_name(name)])
    return urlunsplit((parts.scheme, netloc, parts.path, kept, parts.fragment)), removed


def with_url_password(url: str, password: str) -> str:
    """`url` with `password` (percent-encoded) in its userinfo: the URL handed to a driver, never stored."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0] if at else ""
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scrub_url(url: str) -> str:
    """A URL fit for logs: its password and secret-looking query parameters masked, the rest as given
    (rebuilding it would also turn `sqlite:////abs/path` into `sqlite://abs/path`)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not parts.password and not any(_is_secret_name(name) for name, _ in query):
        return scrub(url)
    netloc = parts.netloc
    if parts.password:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    masked = urlencode([(k, MASK if _is_secret_name(k) else v) for k, v in query], safe="*")
    return scrub(urlunsplit((parts.scheme, netloc, parts.path, masked, parts.fragment)))
