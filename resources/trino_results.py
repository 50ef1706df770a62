"""What the warehouse needs around the `trino` client: Arrow tables from its results, and a TLS
session that really uses the configured CA bundle. Kept apart from `resources/warehouse.py` so the
resource reads as the two engines' query paths; the client itself is imported only when a query runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

# Trino authentication as dbt-trino names it (dbt/profiles.yml `method`): ldap is HTTP basic auth
# that Trino checks against LDAP, basic the same against its password file.
TRINO_AUTH_METHODS = ("none", "ldap", "basic")
TRINO_SOURCE = "strata"  # shown as the query's source in the Trino UI

# Trino type (without its parameters) -> Arrow type, for the types dbt models produce. Types left out
# (arrays, maps, rows, uuid, time, intervals) are inferred by pyarrow from the client's Python values.
_TRINO_TYPE = re.compile(r"^(?P<base>[a-z ]+?)\s*(?:\((?P<args>[^()]*)\))?(?P<tz> with time zone)?$")


def trino_arrow_type(type_name: str) -> pa.DataType | None:
    """The Arrow type for a Trino column type such as `bigint`, `decimal(12,2)`, `timestamp(6)`."""
    import pyarrow as pa

    match = _TRINO_TYPE.match(type_name.strip().lower())
    if match is None:
        return None
    base, args, with_tz = match["base"], match["args"], bool(match["tz"])
    simple = {
        "boolean": pa.bool_(),
        "tinyint": pa.int8(),
        "smallint": pa.int16(),
        "integer": pa.int32(),
        "bigint": pa.int64(),
        "real": pa.float32(),
        "double": pa.float64(),
        "varchar": pa.string(),
        "char": pa.string(),
        "json": pa.string(),
        "varbinary": pa.binary(),
        "date": pa.date32(),
    }
    if base in simple:
        return simple[base]
    if base == "decimal" and args:
        precision, scale = (int(part) for part in args.split(","))
        return pa.decimal128(precision, scale)
    if base == "timestamp":
        # The client hands out Python datetimes, so microseconds is all the precision there is.
        return pa.timestamp("us", tz="UTC" if with_tz else None)
    return None


def rows_to_arrow(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> pa.Table:
    """An Arrow table from DB-API rows and (name, Trino type) pairs: typed from the Trino type where
    `trino_arrow_type` knows it (so an empty result keeps its schema), else inferred by pyarrow from
    the Python values (a column that is all null then becomes Arrow's null type)."""
    import pyarrow as pa

    arrays = []
    for index, (_, type_name) in enumerate(columns):
        values = [row[index] for row in rows]
        arrays.append(pa.array(values, type=trino_arrow_type(type_name)))
    return pa.Table.from_arrays(arrays, names=[name for name, _ in columns])


def pinned_ca_session(ca_bundle: str):
    """A requests session that verifies TLS against `ca_bundle` even when REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE is set: requests lets those replace a session's own `verify` unless each request
    passes one (psf/requests#3829), and the trino client passes none."""
    import requests

    class PinnedCaSession(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            merged["verify"] = self.verify
            return merged

    session = PinnedCaSession()
    session.verify = ca_bundle
    return session
