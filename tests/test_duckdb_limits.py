"""DuckDB's memory limit, threads and spill directory come from the settings and reach both engines'
users: the platform's warehouse connections and the dbt-duckdb profile the dbt subprocess reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from resources.environment import build_dbt_project, build_resources
from resources.settings import load_settings
from resources.warehouse import Warehouse
from tests.test_dbt_project import create_scratch_warehouse, dbt_env, run_dbt  # noqa: F401  (fixture)

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
