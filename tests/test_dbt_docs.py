"""dbt docs: every dbt asset links to its page in the docs site, and `make docs` builds a site holding
exactly those pages (the offline variant, which never opens the warehouse)."""

import json
import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from assets.transform.dbt_models import DBT_DOCS_METADATA
from definitions import build_definitions
from resources.settings import REPO_ROOT, load_settings

DOCS_URL = "http://docs.strata.example:8580/"


def dbt_links(defs: dg.Definitions) -> dict[dg.AssetKey, tuple[str, str | None]]:
    """asset -> (dbt unique id, docs link) for every asset dagster-dbt built from a dbt node."""
    out = {}
    for spec in defs.resolve_all_asset_specs():
        unique_id = spec.metadata.get("dagster_dbt/unique_id")
        link = spec.metadata.get(DBT_DOCS_METADATA)
        if unique_id is not None:
            out[spec.key] = (getattr(unique_id, "value", unique_id), link.url if link is not None else None)
        else:
            assert link is None, spec.key
    return out


def test_every_dbt_asset_links_to_its_docs_page(strata_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STRATA_DBT_DOCS_URL", DOCS_URL)
    links = dbt_links(build_definitions(load_settings()))
    assert links[dg.AssetKey(["gold", "kpi_daily"])] == (
        "model.strata.kpi_daily",
        "http://docs.strata.example:8580/#!/model/model.strata.kpi_daily",
    )
    assert {key.path[0] for key in links} == {"silver", "gold", "gold_restricted"}
    for key, (unique_id, link) in links.items():
        assert link == f"{DOCS_URL.rstrip('/')}/#!/model/{unique_id}", key


def test_the_default_docs_address_is_the_local_docs_server(settings):
    links = dbt_links(build_definitions(settings))
    assert links[dg.AssetKey(["silver", "stg_telemetry"])][1] == (
        "http://127.0.0.1:8580/#!/model/model.strata.stg_telemetry"
    )


@pytest.mark.slow  # two dbt invocations (~45 s on a busy machine)
def test_make_docs_offline_builds_the_pages_the_assets_link_to(strata_root: Path, settings, tmp_path: Path):
    site = tmp_path / "docs"
    env = {**os.environ, "STRATA_ROOT": str(strata_root)}
    process = subprocess.run(
        ["make", "--no-print-directory", "docs", "DOCS_OFFLINE=1", f"DOCS_DIR={site}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-2000:]
    assert (site / "index.html").stat().st_size > 100_000  # dbt's single-page app
    nodes = json.loads((site / "manifest.json").read_text())["nodes"]
    linked = {unique_id for unique_id, _ in dbt_links(build_definitions(settings)).values()}
    assert linked <= set(nodes) and "model.strata.fct_bookings" in linked
    assert json.loads((site / "catalog.json").read_text())["nodes"] == {}  # no warehouse read
    assert not (strata_root / "warehouse.duckdb").exists()
