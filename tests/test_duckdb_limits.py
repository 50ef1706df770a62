"""DuckDB's memory limit, threads and spill directory come from the settings and reach both engines'
users: the platform's warehouse connections and the dbt-duckdb profile the dbt subprocess reads."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from resources.environment import build_dbt_project, build_resources
from resources.settings import load_settings
from resources.warehouse import Warehouse
from tests.test_dbt_project import DBT_DIR, create_scratch_warehouse, dbt_env, release_duckdb, run_dbt  # noqa: F401

SETTINGS_SQL = (
    "select current_setting('memory_limit') as memory_limit, current_setting('threads') as threads, "
    "current_setting('temp_directory') as temp_directory"
)


def test_the_defaults_bound_duckdb_and_spill_under_the_strata_root(strata_root: Path):
    settings = load_settings()
    assert (settings.duckdb_memory_limit, settings.duckdb_threads) == ("2GB", 2)
    assert settings.duckdb_temp_directory == strata_root / "duckdb_tmp"
    with pytest.raises(ValueError, match="STRATA_DUCKDB_THREADS must be a whole number >= 1, got '0'"):
        load_settings({"STRATA_DUCKDB_THREADS": "0"})


def test_the_configured_limits_reach_every_warehouse_connection(strata_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STRATA_DUCKDB_MEMORY_LIMIT", "256MiB")
    monkeypatch.setenv("STRATA_DUCKDB_THREADS", "1")
    settings = load_settings()
    warehouse = build_resources(settings, build_dbt_project(settings))["warehouse"]
    warehouse.connect().close()  # creates the warehouse file, as the first dbt run does

    row = warehouse.query_arrow(SETTINGS_SQL).to_pylist()[0]

    assert row == {
        "memory_limit": "256.0 MiB",
        "threads": 1,
        "temp_directory": str(strata_root / "duckdb_tmp"),
    }
    assert (strata_root / "duckdb_tmp").is_dir()


def test_the_dbt_profile_applies_the_limits_the_platform_passes(dbt_env: Path, tmp_path: Path, monkeypatch):  # noqa: F811
    """What `run_dbt` hands the dbt subprocess (assets/transform/dbt_models.py `dbt_environment`) sets
    DuckDB's limits in the session dbt runs its SQL in."""
    from assets.transform.dbt_models import dbt_environment

    create_scratch_warehouse(dbt_env)
    spill = tmp_path / "spill"
    warehouse = Warehouse(duckdb_memory_limit="300MiB", duckdb_threads=1, duckdb_temp_directory=str(spill))
    for name, value in dbt_environment("run-1", warehouse).items():
        monkeypatch.setenv(name, value)

    shown = run_dbt(tmp_path, "show", "--inline", SETTINGS_SQL, "--target", "local")

    [table] = [r.agate_table for r in shown.results]
    assert [tuple(row.values()) for row in table.rows] == [("300.0 MiB", 1, str(spill))]


# A grouping whose hash table (2M distinct 32-character keys) outgrows a 64 MiB limit, so DuckDB spills.
SPILLING_MODEL = """{{ config(materialized='table') }}
select s, count(*) as n from (select md5(i::varchar) as s from range(2000000) r(i)) group by s"""
LATER_MODELS = {
    "after_spill_count": "{{ config(materialized='table') }} select count(*) as keys from {{ ref('spilled') }}",
    "after_spill_total": "{{ config(materialized='table') }} select sum(n) as total from {{ ref('spilled') }}",
}


class SpillWatcher:
    """The files seen in a spill directory while it runs: DuckDB deletes its spill files when a query ends
    and the directory it created when the database closes, so only watching shows that a run spilled."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                self.seen.update(p.name for p in self.directory.iterdir())
            time.sleep(0.005)

    def __enter__(self) -> SpillWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_spill_project(root: Path) -> Path:
    """A dbt project on Strata's own profile (dbt/profiles.yml `strata`): one model that spills, then more
    models in the same invocation, each on a new dbt-duckdb cursor (which re-applies the profile's settings)."""
    import yaml

    (root / "models").mkdir(parents=True)
    project = {"name": "spill_probe", "version": "1.0", "profile": "strata", "config-version": 2}
    (root / "dbt_project.yml").write_text(yaml.safe_dump(project))
    (root / "models" / "spilled.sql").write_text(SPILLING_MODEL)
    for name, sql in LATER_MODELS.items():
        (root / "models" / f"{name}.sql").write_text(sql)
    return root


def run_spill_project(project: Path, work: Path):
    from dbt.cli.main import dbtRunner

    try:
        result = dbtRunner().invoke(
            [
                *("run", "--project-dir", str(project), "--profiles-dir", str(DBT_DIR), "--target", "local"),
                *("--target-path", str(work / "target"), "--log-path", str(work / "logs"), "--quiet"),
            ]
        )
    finally:
        release_duckdb()
    return result


def test_a_dbt_run_that_spills_goes_on_with_its_later_models(dbt_env: Path, tmp_path: Path, monkeypatch):  # noqa: F811
    """Issue 12: once a model had spilled, every later model failed with DuckDB's `Cannot switch temporary
    directory after the current one has been used`, because dbt-duckdb re-ran the profile's `SET
    temp_directory` on each new cursor. The spill directory is now a connection option, set once."""
    spill = tmp_path / "spill"
    monkeypatch.setenv("STRATA_DUCKDB_MEMORY_LIMIT", "64MB")
    monkeypatch.setenv("STRATA_DUCKDB_THREADS", "1")
    monkeypatch.setenv("STRATA_DUCKDB_TEMP_DIRECTORY", str(spill))
    project = write_spill_project(tmp_path / "project")

    with SpillWatcher(spill) as watcher:
        result = run_spill_project(project, tmp_path)

    outcomes = {r.node.name: (r.status, r.message) for r in result.result.results}
    assert outcomes == {name: ("success", "OK") for name in ("spilled", *LATER_MODELS)}
    assert any(name.startswith("duckdb_temp_storage") for name in watcher.seen), watcher.seen
    # The platform's reads after dbt, with the same limits and spill directory.
    warehouse = Warehouse(
        duckdb_path=str(dbt_env),
        extension_dir=str(tmp_path / "duckdb_extensions"),
        duckdb_memory_limit="64MB",
        duckdb_threads=1,
        duckdb_temp_directory=str(spill),
    )
    counted, summed = warehouse.query_arrow_many(
        [("select keys from main.after_spill_count", ()), ("select total from main.after_spill_total", ())]
    )
    assert (counted.to_pylist(), summed.to_pylist()) == ([{"keys": 2_000_000}], [{"total": 2_000_000}])


SPILLING_QUERY = "select count(*) from (select md5(i::varchar) as s, count(*) from range(2000000) r(i) group by s)"


def test_warehouse_connections_that_share_a_database_go_on_after_a_spill(tmp_path: Path):
    """Connections a process holds at once share one DuckDB database (DuckDB caches it per file); once one
    had spilled, the next connection's `SET temp_directory` failed. Reads after a spill must work."""
    spill = tmp_path / "spill"
    warehouse = Warehouse(
        duckdb_path=str(tmp_path / "w.duckdb"),
        extension_dir=str(tmp_path / "duckdb_extensions"),
        duckdb_memory_limit="64MB",
        duckdb_threads=1,
        duckdb_temp_directory=str(spill),
    )
    warehouse.connect().close()  # creates the warehouse file, as the first dbt run does

    with SpillWatcher(spill) as watcher, warehouse.connect(read_only=True) as held:
        assert held.execute(SPILLING_QUERY).fetchone() == (2_000_000,)
        after = warehouse.query_arrow(SETTINGS_SQL + ", (" + SPILLING_QUERY + ") as keys").to_pylist()

    assert any(name.startswith("duckdb_temp_storage") for name in watcher.seen), watcher.seen
    assert after == [{"memory_limit": "61.0 MiB", "threads": 1, "temp_directory": str(spill), "keys": 2_000_000}]
