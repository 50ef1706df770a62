"""The Iceberg catalog resource and the write primitives every Bronze asset uses.

Writes go through `commit_with_retry` because several runs may commit to the same table at once
(hourly telemetry partitions loaded in parallel): Iceberg's optimistic concurrency rejects the loser,
which then reloads the table and tries again instead of failing the run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import dagster as dg

from resources.secrets import SecretsResource, build_secrets_resource, hold_in_memory
from resources.settings import ICEBERG_CATALOG_NAME, SECRET_NAME, StrataSettings, iceberg_secret_property

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

T = TypeVar("T")
_CATALOGS: dict[tuple, Catalog] = {}
_CATALOGS_LOCK = threading.Lock()
COMMIT_ATTEMPTS = 8


class IcebergCatalog(dg.ConfigurableResource):
    """A pyiceberg catalog: SqlCatalog (SQLite/PostgreSQL) locally, REST/Glue/JDBC-style in prod.

    `properties` are plain settings, never credentials (Dagster stores and shows resource config):
    those are `IcebergCatalogWithSecrets.secret_properties`, or pyiceberg's AWS default credential chain.
    """

    uri: str
    warehouse: str
    catalog_type: str = "sql"
    properties: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: StrataSettings, secrets: SecretsResource | None = None) -> IcebergCatalog:
        """The catalog of an environment: the one place its settings become a resource.

        A secret-looking property given with its value (STRATA_ICEBERG_PROP_S3__SECRET_ACCESS_KEY,
        deprecated) is moved into an in-memory secret rather than into config."""
        properties, secret_properties = {}, dict(settings.catalog_secret_properties)
        for name, value in settings.catalog_properties.items():
            if SECRET_NAME.search(name) and not name.endswith("access_key_id"):
                prop = iceberg_secret_property(name.replace(".", "__"))
                secret_properties[prop] = hold_in_memory(f"iceberg/{prop}", value)
            else:
                properties[name] = value
        common = dict(uri=settings.iceberg_catalog_uri, warehouse=settings.iceberg_warehouse, properties=properties)
        if not secret_properties:
            return IcebergCatalog(**common)
        secrets = secrets or build_secrets_resource(settings)  # e.g. the audit CLI, outside Dagster
        return IcebergCatalogWithSecrets(**common, secret_properties=secret_properties, secrets=secrets)

    def load(self) -> Catalog:
        """The pyiceberg catalog, opened once per process and configuration: opening a SqlCatalog
        creates an engine and checks its tables, and one load calls this several times."""
        key = (self.catalog_type, self.uri, self.warehouse, tuple(sorted(self._identity().items())))
        with _CATALOGS_LOCK:
            if key not in _CATALOGS:
                _CATALOGS[key] = self._open()
            return _CATALOGS[key]

    def _open(self) -> Catalog:
        from pyiceberg.catalog import load_catalog

        props = {"uri": self.uri, "warehouse": self.warehouse, **self.properties, **self._secret_values()}
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return load_catalog(ICEBERG_CATALOG_NAME, type=self.catalog_type, **props)

    def _identity(self) -> dict[str, str]:
        """What tells catalogs apart besides uri and warehouse: properties, and secret names (not values)."""
        return dict(self.properties)

    def _secret_values(self) -> dict[str, str]:
        return {}

    def load_or_create_table(self, identifier: str, schema, partition_spec=None) -> Table:
        catalog = self.load()
        namespace = identifier.split(".")[0]
        catalog.create_namespace_if_not_exists(namespace)
        kwargs = {"partition_spec": partition_spec} if partition_spec is not None else {}
        return catalog.create_table_if_not_exists(identifier, schema=schema, **kwargs)

    def table_or_none(self, identifier: str) -> Table | None:
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self.load().load_table(identifier)
        except NoSuchTableError:
            return None


class IcebergCatalogWithSecrets(IcebergCatalog):
    """A catalog whose credential properties (`secret_properties`: property -> secret name, e.g.
    `s3.secret-access-key` -> `iceberg/s3_secret_access_key`) are read from `secrets` when it is opened.

    A class of its own because a nested resource makes Dagster open the whole resource as a context
    manager; the catalog without secrets stays a plain resource."""

    secret_properties: dict[str, str]
    secrets: SecretsResource

    def _identity(self) -> dict[str, str]:
        return {**self.properties, **{f"secret:{prop}": name for prop, name in self.secret_properties.items()}}

    def _secret_values(self) -> dict[str, str]:
        return {prop: self.secrets.get(name) for prop, name in self.secret_properties.items()}


def commit_with_retry(table: Table, write: Callable[[Table], T], *, attempts: int = COMMIT_ATTEMPTS) -> T:
    """Run `write(table)`; on a concurrent-commit conflict reload the table and run it again.

    pyiceberg already re-bases a refused snapshot commit on the new table state when the concurrent
    change does not touch the rows it replaces (another hour). When it does (two loads of the same
    hour, two upserts of the same keys), pyiceberg raises `ValidationException` instead: the write must
    be computed again from the new state, which is what re-running `write` does. Both exceptions mean
    the commit did not land.
    """
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    for attempt in range(1, attempts + 1):
        try:
            return write(table)
        except (CommitFailedException, ValidationException):
            if attempt == attempts:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
            table = table.refresh()
    raise AssertionError("unreachable")
