"""`audit replay`: a past daily build re-run on the Bronze snapshots it read reproduces its recorded
checksums; after a source row changes and is reloaded, the old run still replays identically (it reads
its old snapshots) while a fresh build of the same days records different checksums."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import dagster as dg
import pytest

from audit.cli import main as audit_main
from audit.replay import Difference, ReplayResult, recorded_run, replay_run
from definitions import build_definitions
from jobs.backfill import range_tags, run_backfill
from tests.conftest import TEST_START
from tests.support import generate_demo, refresh_unpartitioned

DAYS = 2
KPI = "gold/kpi_daily"


def test_a_replay_report_names_each_differing_table_and_partition(tmp_path):
    result = ReplayResult(
        "r1",
        3,
        [
            Difference(KPI, "2026-10-02", "rows=1 hash=5", "rows=1 hash=6"),
            Difference("gold/dim_stations", None, "a", "b"),
        ],
        [],
        tmp_path,
    )
    assert result.report().splitlines() == [
        "differs: 2 of 3 table partition(s) of run r1",
        "  gold/kpi_daily[2026-10-02]: recorded rows=1 hash=5, replayed rows=1 hash=6",
        "  gold/dim_stations: recorded a, replayed b",
    ]
    assert ReplayResult("r1", 3, [], [], tmp_path).report() == (
        "identical: 3 table partition(s) of run r1 reproduce exactly"
    )


@pytest.mark.slow  # a two-day backfill, a refresh, a second daily build and two replays
def test_replay_of_a_past_daily_build_is_identical_after_its_source_changed(settings, monkeypatch, capsys):
    generate_demo(settings, TEST_START, DAYS)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    summary = run_backfill(defs, instance, TEST_START, TEST_START + timedelta(days=DAYS))
    assert summary.success, summary
    (old_run,) = [run_id for job, run_id, _ok, _s in summary.runs if job == "build_daily"]
    old = recorded_run(instance, old_run)
    days = [f"{TEST_START + timedelta(days=n):%Y-%m-%d}" for n in range(DAYS)]
    assert {(KPI, day) for day in days} <= set(old.checksums)
    assert old.pins  # the Bronze snapshots it read

    first = replay_run(instance, old_run, settings)
    assert first.identical, first.report()
    assert first.compared == len(old.checksums) >= 10

    # A captured payment of the first day changes in the source and is reloaded into Bronze; the
    # unpartitioned models are rebuilt from it. The daily build that ran before is not touched.
    with sqlite3.connect(settings.source_database_url.removeprefix("sqlite:///")) as source:
        (payment_id,) = source.execute(
            "SELECT min(payment_id) FROM payments WHERE status = 'captured' AND date(paid_at) = ?", [days[0]]
        ).fetchone()
        source.execute(
            "UPDATE payments SET amount_cents = amount_cents + 100, updated_at = datetime(updated_at, '+3 days') "
            "WHERE payment_id = ?",
            [payment_id],
        )
    refresh = refresh_unpartitioned(defs, instance)  # the OLTP extraction and the unpartitioned models
    assert refresh.success

    again = replay_run(instance, old_run, settings)
    assert again.identical, again.report()

    fresh_run = defs.resolve_job_def("build_daily").execute_in_process(
        instance=instance, tags=range_tags(days[0], days[-1]), raise_on_error=False
    )
    assert fresh_run.success
    fresh = recorded_run(instance, fresh_run.run_id)
    changed = {key for key, value in fresh.checksums.items() if old.checksums.get(key) != value}
    # The day the payment was made: its revenue changed; the other day did not.
    assert (KPI, days[0]) in changed and (KPI, days[1]) not in changed

    # The CLI says the same, from the instance DAGSTER_HOME names.
    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(lambda: _unclosed(instance)))
    assert audit_main(["replay", old_run]) == 0
    assert capsys.readouterr().out.strip().endswith(f"table partition(s) of run {old_run} reproduce exactly")


class _unclosed:
    """The test's instance as a context manager that leaves it open."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance

    def __enter__(self) -> dg.DagsterInstance:
        return self.instance

    def __exit__(self, *exc) -> None:
        return None
