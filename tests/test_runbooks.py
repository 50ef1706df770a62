"""Runbooks in docs/runbooks/ are generated from the definitions (jobs/runbooks.py): a committed runbook
that differs from what the code generates now is stale and fails here (fix: `make runbooks`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from definitions import build_definitions
from jobs.runbooks import RUNBOOK_DIR, failure_texts, render_runbooks, stale_runbooks, write_runbooks


@pytest.fixture(scope="module")
def defs():
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STRATA_START_DATE", "2026-10-01")
        from resources.settings import load_settings

        yield build_definitions(load_settings())


def test_committed_runbooks_are_up_to_date(defs):
    assert stale_runbooks(defs) == [], "stale runbooks: run `make runbooks` and commit docs/runbooks/"


def test_every_job_has_a_runbook_and_the_ml_one_links_the_hand_written_rollback(defs):
    files = render_runbooks(defs)
    assert {f"job-{job.name}.md" for job in defs.jobs} <= set(files)
    assert "[model-rollback.md](model-rollback.md)" in files["job-retrain_demand_model.md"]
    assert (RUNBOOK_DIR / "model-rollback.md").exists()
    # Exact texts from the code, with the placeholders the run fills in.
    assert (
        "`drop {prefix}{name}: sha256 check failed: sha256 is {digest}, manifest says {entry['sha256']}`"
        in (files["job-load_hourly.md"])
    )
    assert "weather API payload refused, nothing loaded into {WEATHER_TABLE}: {error}" in files["job-fetch_weather.md"]
    assert "- Schedule `hourly_oltp_extraction`, cron `0 * * * *` UTC" in files["job-extract_oltp.md"]
    assert "- Sensor `telemetry_drop_sensor` (every 30 s)" in files["job-load_hourly.md"]


def test_every_failure_text_has_a_remediation():
    failures = failure_texts()
    assert len(failures) >= 30
    assert [f"{f.module}: {f.text}" for f in failures if f.remediation is None] == []


def test_a_stale_or_leftover_runbook_is_reported_and_regeneration_fixes_it(defs, tmp_path: Path):
    write_runbooks(defs, tmp_path)
    assert stale_runbooks(defs, tmp_path) == []
    (tmp_path / "job-build_daily.md").write_text((tmp_path / "job-build_daily.md").read_text() + "edited\n")
    leftover = tmp_path / "job-gone.md"
    leftover.write_text((tmp_path / "index.md").read_text())  # carries the generated mark
    assert stale_runbooks(defs, tmp_path) == ["job-build_daily.md", "job-gone.md"]
    write_runbooks(defs, tmp_path)
    assert stale_runbooks(defs, tmp_path) == [] and not leftover.exists()
