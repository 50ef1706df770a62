"""SLO figures (audit/slo.py) over a scripted history of runs, against values computed by hand."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from assets.reports.slo import build_slo_report_asset
from audit.cli import build_parser, main
from audit.slo import CheckResult, History, RunHistory, compute_slo, slo_html, slo_markdown
from resources.outputs import OutputsArea

T0 = datetime(2026, 10, 5, tzinfo=UTC)
TELEMETRY, KPI, HEALTH = "bronze/telemetry", "gold/kpi_daily", "gold/fleet_health_daily"
H1, H2, DAY, LATE_DAY = "2026-10-04-22:00", "2026-10-04-23:00", "2026-10-04", "2026-10-03"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(run_id, status, created, ended, planned=(), materialized=None, checks=(), failed_at=None, not_run=False):
    return RunHistory(
        run_id=run_id,
        status=status,
        created=at(created),
        ended=at(ended),
        not_run=not_run,
        planned=set(planned),
        materialized={key: at(m) for key, m in (materialized or {}).items()},
        checks=[CheckResult(a, p, name, passed, blocking, at(m)) for a, p, name, passed, blocking, m in checks],
        first_failure_at=at(failed_at) if failed_at is not None else None,
    )


def scripted_history() -> History:
    return History(
        runs=[
            # bronze: an hour loads; the next hour's run fails at minute 63 (data arrived at 60) and a run
            # whose step was retried inside it loads it at minute 100; a guard kept one run from running.
            run(
                "A",
                "SUCCESS",
                0,
                3,
                [(TELEMETRY, H1)],
                {(TELEMETRY, H1): 2},
                [(TELEMETRY, H1, "keys", True, True, 2.5)],
            ),
            run("B", "FAILURE", 60, 64, [(TELEMETRY, H2)], failed_at=63),
            run("C", "SUCCESS", 90, 101, [(TELEMETRY, H2)], {(TELEMETRY, H2): 100}),
            run("G", "SUCCESS", 110, 111, [("bronze/customers", None)], not_run=True),
            # gold: the day is built at 125 and fails its blocking check at 126 (arrived 120); rebuilt and
            # passing at 210; a canceled run; fleet health fails at 305 (arrived 300) and is not repaired.
            run(
                "D",
                "FAILURE",
                120,
                127,
                [(KPI, DAY)],
                {(KPI, DAY): 125},
                [(KPI, DAY, "not_null", False, True, 126), (KPI, DAY, "volume", False, False, 126)],
            ),
            run("E", "SUCCESS", 200, 212, [(KPI, DAY)], {(KPI, DAY): 210}, [(KPI, DAY, "not_null", True, True, 211)]),
            run("F", "CANCELED", 250, 251, [(KPI, DAY)]),
            run("H", "FAILURE", 300, 306, [(HEALTH, DAY)], failed_at=305),
        ],
        # a late day: kpi_daily's freshness check named 2026-10-03 late
        late_partitions={KPI: {LATE_DAY}},
        freshness_assets={KPI, TELEMETRY},
        models={"silver/stg_a": True, "silver/b": False, KPI: True, HEALTH: True},
    )


def test_slo_figures_equal_the_hand_computed_values():
    rows = {row.group: row for row in compute_slo(scripted_history())}
    assert set(rows) == {"bronze", "gold", "silver"}
    bronze, gold, silver = rows["bronze"], rows["gold"], rows["silver"]

    # success rate: bronze A, C succeeded, B failed, G (not run) left out; gold E succeeded, D and H failed,
    # F (canceled) left out
    assert (bronze.runs_succeeded, bronze.runs_failed, bronze.runs_left_out) == (2, 1, 1)
    assert bronze.success_rate == pytest.approx(2 / 3)
    assert (gold.runs_succeeded, gold.runs_failed, gold.runs_left_out) == (1, 2, 1)
    assert gold.success_rate == pytest.approx(1 / 3)

    # MTTR: bronze H2 failed at 63, loaded at 100 -> 37 min; gold kpi failed its check at 126, passed at
    # 210 -> 84 min; fleet health still open
    assert (bronze.incidents, bronze.open_incidents, bronze.mttr_minutes) == (1, 0, 37.0)
    assert (gold.incidents, gold.open_incidents, gold.mttr_minutes) == (1, 1, 84.0)

    # MTTD: bronze 63 - 60 = 3 min; gold (126 - 120 + 305 - 300) / 2 = 5.5 min
    assert bronze.mttd_minutes == 3.0
    assert gold.mttd_minutes == 5.5

    # freshness: telemetry H1, H2 on time (2 of 2); kpi: DAY on time, LATE_DAY reported late (1 of 2)
    assert (bronze.partitions_due, bronze.partitions_late, bronze.freshness_attainment) == (2, 0, 1.0)
    assert (gold.partitions_due, gold.partitions_late, gold.freshness_attainment) == (2, 1, 0.5)

    # critical (blocking) checks: bronze 1 of 1; gold 1 of 2 (the warning check is not critical)
    assert (bronze.critical_checks, bronze.critical_checks_passed, bronze.critical_checks_passing) == (1, 1, 1.0)
    assert (gold.critical_checks, gold.critical_checks_passed, gold.critical_checks_passing) == (2, 1, 0.5)

    # models with tests: silver 1 of 2, gold 2 of 2, bronze has no models
    assert (silver.models, silver.models_tested, silver.models_with_tests) == (2, 1, 0.5)
    assert (gold.models, gold.models_with_tests) == (2, 1.0)
    assert bronze.models_with_tests is None and silver.success_rate is None


def test_a_success_before_any_failure_opens_no_incident_and_repeated_failures_are_one():
    history = History(
        runs=[
            run("a", "SUCCESS", 0, 1, [(KPI, DAY)], {(KPI, DAY): 1}),
            run("b", "FAILURE", 10, 12, [(KPI, DAY)], failed_at=11),
            run("c", "FAILURE", 20, 22, [(KPI, DAY)], failed_at=21),  # a retry run that fails again
            run("d", "SUCCESS", 30, 41, [(KPI, DAY)], {(KPI, DAY): 40}),
        ]
    )
    (gold,) = compute_slo(history)
    assert (gold.incidents, gold.mttr_minutes, gold.mttd_minutes) == (1, 29.0, 1.0)
    assert gold.success_rate == 0.5


def test_the_report_renders_the_figures_as_markdown_and_html():
    rows = compute_slo(scripted_history())
    markdown = slo_markdown(rows, T0, T0 + timedelta(days=1))
    assert "| bronze | 66.7% | 37.0 | 3.0 | 100.0% | 100.0% | - |" in markdown
    assert "| gold | 33.3% | 84.0 | 5.5 | 50.0% | 50.0% | 100.0% |" in markdown
    html = slo_html(rows, T0, T0 + timedelta(days=1))
    assert "<td>66.7%</td>" in html and "<svg" in html


def test_the_cli_takes_since_and_until():
    args = build_parser().parse_args(["slo", "--since", "2026-10-01", "--until", "2026-10-07"])
    assert (args.command, args.since, args.until, args.json) == ("slo", "2026-10-01", "2026-10-07", False)


# --- on a real Dagster instance ---------------------------------------------------------------------------

TOY = dg.AssetKey(["bronze", "toy"])
DAILY = dg.DailyPartitionsDefinition(start_date="2026-10-01", end_offset=1)


class ToyConfig(dg.Config):
    fail: bool = False  # a deterministic failure: no retry
    flaky: bool = False  # fails its first attempt, then succeeds on the retry


@dg.asset(key=TOY, partitions_def=DAILY, retry_policy=dg.RetryPolicy(max_retries=1))
def toy(context: dg.AssetExecutionContext, config: ToyConfig) -> dg.MaterializeResult:
    if config.fail:
        raise dg.Failure(f"bronze.toy[{context.partition_key}]: bad data", allow_retries=False)
    if config.flaky and context.retry_number == 0:
        raise RuntimeError("connection reset")
    return dg.MaterializeResult(metadata={"strata/rows_out": 1})


@dg.asset_check(asset=TOY, blocking=True)
def toy_has_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def run_toy(instance: dg.DagsterInstance, day: str, **config: bool) -> dg.RunRecord:
    result = dg.materialize(
        [toy, toy_has_rows],
        instance=instance,
        partition_key=day,
        run_config={"ops": {"bronze__toy": {"config": config}}},
        raise_on_error=False,
    )
    return instance.get_run_record_by_id(result.run_id)


def event_time(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list[datetime]:
    return [datetime.fromtimestamp(e.timestamp, UTC) for e in instance.all_logs(run_id, of_type=kind)]


@pytest.mark.slow  # five real runs
def test_slo_figures_of_real_runs_equal_those_computed_from_their_records(tmp_path, monkeypatch, capsys):
    """Four real runs of one daily asset: a success, a failure then a success of the same day, and a run
    whose step failed once and succeeded on its retry. `audit slo` and `platform/slo_report` give the
    figures computed here from the run records and their events' timestamps."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # what `audit slo` opens
    started = datetime.now(UTC) - timedelta(seconds=1)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        ok = run_toy(instance, "2026-10-01")
        failed = run_toy(instance, "2026-10-02", fail=True)
        repaired = run_toy(instance, "2026-10-02")
        retried = run_toy(instance, "2026-10-03", flaky=True)
        statuses = [r.dagster_run.status.value for r in (ok, failed, repaired, retried)]
        assert statuses == ["SUCCESS", "FAILURE", "SUCCESS", "SUCCESS"]
        assert len(event_time(instance, retried.dagster_run.run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY)) == 1

        (failed_at,) = event_time(instance, failed.dagster_run.run_id, dg.DagsterEventType.STEP_FAILURE)
        (repaired_at,) = event_time(instance, repaired.dagster_run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
        mttr = round((repaired_at - failed_at).total_seconds() / 60, 3)
        mttd = round((failed_at - failed.create_timestamp).total_seconds() / 60, 3)

        assert main(["slo", "--since", started.isoformat(), "--json"]) == 0
        figures = json.loads(capsys.readouterr().out)
        # The other groups are the dbt models' (from the manifest), which no run here touched.
        bronze = next(row for row in figures if row["group"] == "bronze")

        # The same figures from the daily asset, for the day the runs were made on.
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        outputs = OutputsArea(root=str(tmp_path / "outputs"))
        report = dg.materialize(
            [build_slo_report_asset(DAILY)], instance=instance, partition_key=today, resources={"outputs": outputs}
        )
        published = json.loads((tmp_path / "outputs" / "reports" / "slo" / today / "slo.json").read_text())
        summary = report.asset_materializations_for_node("platform__slo_report")[0].metadata["strata/slo"].value

    assert bronze == {
        "group": "bronze",
        "runs_succeeded": 3,  # the retried run counts once
        "runs_failed": 1,
        "runs_left_out": 0,
        "success_rate": 0.75,
        "incidents": 1,  # 2026-10-02: failed, then repaired
        "open_incidents": 0,
        "mttr_minutes": mttr,
        "mttd_minutes": mttd,
        "partitions_due": 0,  # no freshness rule on the toy asset
        "partitions_late": 0,
        "freshness_attainment": None,
        "critical_checks": 3,  # the blocking check ran in each run that materialized
        "critical_checks_passed": 3,
        "critical_checks_passing": 1.0,
        "models": 0,
        "models_tested": 0,
        "models_with_tests": None,
    }
    assert mttd > 0 and mttr > 0
    assert {row["group"] for row in figures if row["runs_succeeded"] + row["runs_failed"]} == {"bronze"}
    assert published == figures
    assert "| bronze | 75.0% |" in summary
