"""Dual-run parity: the declarations, the comparison (exact tolerances, keys, renamed codes, date/time
equivalence), the published reports, the cut-over view, and warning vs blocking by configuration.

The end-to-end test runs the real pipeline on the demo, whose legacy outputs carry seeded differences
recorded in the ground truth: parity must find exactly those, no more and no fewer."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from assets.quality.parity import compare_legacy_output
from assets.quality.parity_config import CUT_OVER, ParityConfigError, load_parity_tables, parse_table
from audit.cutover import cutover_view, format_cutover
from resources.outputs import OutputsArea

DAY = date(2026, 10, 1)
LEDGER = parse_table(
    {
        "table": "gold.ledger",
        "legacy_file": "legacy/ledger_{day:%Y%m%d}.csv",
        "day_column": "posting_date",
        "key": ["posting_date", "account"],
        "columns": {
            "posting_date": {"legacy": "POSTING_DT", "type": "date", "format": "%d%b%Y:%H:%M:%S"},
            "account": {"legacy": "Segment 8", "type": "text", "value_map": {"1205": "1200"}},
            "lines": {"legacy": "LINE CNT", "type": "int"},
            "amount": {"legacy": "AMT", "type": "decimal", "abs_tol": 0.005},
        },
    }
)
LEGACY_CODE = {"1200": "1205"}  # the legacy ledger's name of the receivables account


def legacy_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["POSTING_DT", "Segment 8", "LINE CNT", "AMT"])
    for row in rows:
        writer.writerow([f"{DAY:%d%b%Y}:00:00:00".upper(), row["account"], row["lines"], row["amount"]])
    return out.getvalue().encode()


def governed(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"posting_date": DAY, **row} for row in rows],
        schema=pa.schema(
            [
                ("posting_date", pa.date32()),
                ("account", pa.string()),
                ("lines", pa.int64()),
                ("amount", pa.decimal128(19, 4)),
            ]
        ),
    )


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def found(result) -> set[tuple]:
    """What a parity result reports, as (kind, account, column) triples."""
    return (
        {("only_in_legacy", k["account"], None) for k in result.keys_only_in_legacy}
        | {("only_in_new", k["account"], None) for k in result.keys_only_in_new}
        | {("column", d["account"], column) for d in result.top_differences for column in d["differences"]}
    )


# --- the declarations ---------------------------------------------------------------------------------


def test_the_declared_tables_are_the_migrated_gold_tables_in_dual_run():
    tables = {t.table: t for t in load_parity_tables()}
    assert set(tables) == {"gold.field_production_daily", "gold.trial_balance_daily"}
    assert {t.state for t in tables.values()} == {"dual-run"}
    balance = tables["gold.trial_balance_daily"]
    assert balance.column("account").legacy == "Segment 8"
    assert balance.column("account").value_map == {"1205": "1200"}
    assert balance.column("net_amount").abs_tol == 0.005
    assert balance.legacy_key(DAY) == "legacy/gl_trial_balance/GLTB_20261001.csv"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"state": "parallel"},
            "parity.yaml: gold.ledger has state 'parallel'; use one of ['dual-run', 'cut-over']",
        ),
        (
            {"key": ["posting_date", "acct"]},
            "parity.yaml: gold.ledger key/day column 'acct' is not among its columns "
            "['account', 'amount', 'lines', 'posting_date']",
        ),
        (
            {"columns": {"posting_date": {"legacy": "D", "type": "date"}}},
            "parity.yaml: gold.ledger column 'posting_date' is a date: it needs the legacy `format` (strptime)",
        ),
        (
            {"columns": {"account": {"legacy": "Segment 8", "type": "text", "abs_tol": 1}}},
            "parity.yaml: gold.ledger column 'account' is text: tolerances apply to ['int', 'decimal', 'float'] only",
        ),
    ],
)
def test_a_wrong_declaration_names_the_table_and_column(change, message):
    entry = {
        "table": "gold.ledger",
        "legacy_file": "legacy/ledger_{day:%Y%m%d}.csv",
        "day_column": "posting_date",
        "key": ["posting_date", "account"],
        "columns": {
            "posting_date": {"legacy": "POSTING_DT", "type": "date", "format": "%d%b%Y"},
            "account": {"legacy": "Segment 8", "type": "text"},
            "lines": {"legacy": "LINE CNT", "type": "int"},
            "amount": {"legacy": "AMT", "type": "decimal"},
        },
    }
    if "columns" in change:
        entry["columns"] = {**entry["columns"], **change.pop("columns")}
    with pytest.raises(ParityConfigError) as raised:
        parse_table({**entry, **change}, "parity.yaml")
    assert str(raised.value) == message


# --- the comparison -----------------------------------------------------------------------------------

ACCOUNTS = ["1200", "2100", "4000", "5100", "6100", "7100"]


@hypothesis_settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    amounts=st.lists(st.integers(-(10**11), 10**11), min_size=len(ACCOUNTS), max_size=len(ACCOUNTS)),
)
def test_parity_finds_exactly_the_differences_put_into_the_legacy_output(data, amounts):
    """The legacy output prints amounts rounded to cents (within the 0.005 tolerance, ties included)
    and names receivables 1205 (declared). On top of that, some amounts are moved by more than the
    tolerance, some line counts changed, some keys dropped and some added: parity reports exactly those."""
    rows = [
        {"account": a, "lines": i + 1, "amount": Decimal(v).scaleb(-4)}
        for i, (a, v) in enumerate(zip(ACCOUNTS, amounts, strict=True))
    ]
    present = data.draw(st.lists(st.sampled_from(ACCOUNTS), unique=True, min_size=1))
    dropped = set(data.draw(st.lists(st.sampled_from(present), unique=True, max_size=2)))
    moved = set(data.draw(st.lists(st.sampled_from(present), unique=True)))
    recounted = set(data.draw(st.lists(st.sampled_from(present), unique=True)))
    extra = data.draw(st.booleans())
    new_rows = [r for r in rows if r["account"] in present]
    legacy_rows, expected = [], set()
    for row in new_rows:
        account = row["account"]
        if account in dropped:
            expected.add(("only_in_new", account, None))
            continue
        amount = cents(row["amount"])
        if account in moved:
            step = data.draw(st.integers(51, 10**6))  # in 0.0001: always more than 0.005 away
            amount = row["amount"] + Decimal(step if data.draw(st.booleans()) else -step).scaleb(-4)
            expected.add(("column", account, "amount"))
        lines = row["lines"] + (1 if account in recounted else 0)
        if account in recounted:
            expected.add(("column", account, "lines"))
        legacy_rows.append({"account": LEGACY_CODE.get(account, account), "lines": lines, "amount": amount})
    if extra:
        legacy_rows.append({"account": "9999", "lines": 1, "amount": Decimal("1.00")})
        expected.add(("only_in_legacy", "9999", None))

    result = compare_legacy_output(LEDGER, DAY, legacy_csv(legacy_rows), governed(new_rows), "ledger.csv", top_n=100)
    assert result.error is None
    assert found(result) == expected
    assert result.matched == (not expected)
    assert (result.rows_legacy, result.rows_new) == (len(legacy_rows), len(new_rows))


def test_tolerances_are_exact_decimals_and_dates_equal_midnight_times():
    new = governed([{"account": "4000", "lines": 1, "amount": Decimal("1.2350")}])
    # 1.2350 printed as 1.23 is exactly 0.005 away: within tolerance (a binary float may say otherwise)
    assert compare_legacy_output(
        LEDGER, DAY, legacy_csv([{"account": "4000", "lines": 1, "amount": "1.23"}]), new, "l.csv"
    ).matched
    off = compare_legacy_output(
        LEDGER,
        DAY,
        legacy_csv([{"account": "4000", "lines": 1, "amount": "1.2299"}]),
        new,
        "l.csv",
    )
    assert off.columns_out_of_tolerance == ["amount"]
    assert off.top_differences == [
        {
            "posting_date": "2026-10-01",
            "account": "4000",
            "differences": {"amount": {"legacy": "1.2299", "new": "1.235"}},
        }
    ]
    # a legacy time that is not midnight is not the same day
    later = legacy_csv([{"account": "4000", "lines": 1, "amount": "1.23"}]).replace(b":00:00:00", b":06:00:00")
    assert compare_legacy_output(LEDGER, DAY, later, new, "l.csv").keys_only_in_legacy == [
        {"posting_date": "2026-10-01T06:00:00", "account": "4000"}
    ]


def test_an_unreadable_or_missing_legacy_output_is_named_not_passed():
    new = governed([{"account": "4000", "lines": 1, "amount": Decimal("1.2350")}])
    bad = legacy_csv([{"account": "4000", "lines": "one", "amount": "1.23"}])
    result = compare_legacy_output(LEDGER, DAY, bad, new, "legacy/ledger_20261001.csv")
    assert not result.matched
    assert result.error == (
        "legacy/ledger_20261001.csv line 2: column 'LINE CNT' (gold.ledger.lines) value 'one' is not a int"
    )
    missing = compare_legacy_output(LEDGER, DAY, None, new, "legacy/ledger_20261001.csv")
    assert missing.error == "no legacy output legacy/ledger_20261001.csv for 2026-10-01" and not missing.matched


def test_duplicated_keys_are_reported():
    new = governed([{"account": "4000", "lines": 1, "amount": Decimal("1.0000")}])
    twice = legacy_csv([{"account": "4000", "lines": 1, "amount": "1.00"}] * 2)
    result = compare_legacy_output(LEDGER, DAY, twice, new, "l.csv")
    assert result.duplicate_keys_legacy == [{"posting_date": "2026-10-01", "account": "4000"}]
    assert not result.matched


# --- the cut-over view --------------------------------------------------------------------------------


def publish_report(outputs: OutputsArea, table: str, day: date, run: str, matched: bool, state: str, at: str):
    report = {"table": table, "day": day.isoformat(), "matched": matched, "state": state}
    report |= {"checked_at": at, "ready_after_days": 3, "run_id": run}
    outputs.publish(f"parity/{table}/{day.isoformat()}/{run}", {"report.json": json.dumps(report).encode()})


def test_the_cutover_view_counts_consecutive_matching_days_from_the_reports(tmp_path):
    outputs = OutputsArea(root=str(tmp_path / "outputs"))
    days = [DAY + timedelta(days=i) for i in range(6)]
    # gold.a: day 2 differed, days 3-6 matched -> 4 consecutive days, ready (3 needed)
    for i, day in enumerate(days):
        publish_report(outputs, "gold.a", day, f"r{i}", i != 1, "dual-run", f"2026-10-0{i + 1}T02:00:00")
    # gold.b: the last day differed at first, then a re-run matched: the latest report of a day counts
    for i, day in enumerate(days[:2]):
        publish_report(outputs, "gold.b", day, f"b{i}", i != 1, "dual-run", f"2026-10-0{i + 1}T02:00:00")
    # gold.c: cut over
    publish_report(outputs, "gold.c", days[0], "c0", True, CUT_OVER, "2026-10-01T02:00:00")
    view = {t.table: t for t in cutover_view(outputs)}
    assert (view["gold.a"].consecutive_matching_days, view["gold.a"].status) == (4, "ready to cut over")
    assert view["gold.a"].differing_days == ("2026-10-02",)
    assert (view["gold.b"].consecutive_matching_days, view["gold.b"].status) == (0, "dual run")
    publish_report(outputs, "gold.b", days[1], "b2", True, "dual-run", "2026-10-03T09:00:00")
    view = {t.table: t for t in cutover_view(outputs)}
    assert (view["gold.b"].consecutive_matching_days, view["gold.b"].status) == (2, "dual run")
    assert view["gold.c"].status == "cut over"
    assert format_cutover(list(view.values())).splitlines()[1].startswith("gold.a  ready to cut over  4")


# --- end to end on the demo ---------------------------------------------------------------------------

DAYS = 3


def truth_found(truth: dict) -> set[tuple]:
    """The seeded differences of the ground truth as (table, day, kind, key, column) tuples."""
    out = set()
    for d in truth["differences"]:
        key = tuple(sorted((k, str(v)) for k, v in d["key"].items()))
        if "only_in" in d:
            out.add((d["table"], d["day"], f"only_in_{d['only_in']}", key, None))
        else:
            out |= {(d["table"], d["day"], "column", key, column) for column in d["columns"]}
    return out


def report_found(report: dict) -> set[tuple]:
    table, day = report["table"], report["day"]

    def key(entry):
        return tuple(sorted((k, str(entry[k])) for k in report["key"]))

    return (
        {(table, day, "only_in_legacy", key(k), None) for k in report["keys_only_in_legacy"]}
        | {(table, day, "only_in_new", key(k), None) for k in report["keys_only_in_new"]}
        | {(table, day, "column", key(d), c) for d in report["top_differences"] for c in d["differences"]}
    )


@pytest.mark.slow
def test_parity_on_the_demo_finds_exactly_the_seeded_differences_and_blocks_once_cut_over(settings):
    from assets.partitions import daily_partitions
    from assets.quality.parity_checks import build_parity_check
    from audit.cutover import latest_reports
    from definitions import build_definitions
    from jobs.backfill import run_backfill
    from resources.environment import build_dbt_project, build_resources
    from tests.conftest import TEST_START
    from tests.support import generate_demo

    truth = generate_demo(settings, TEST_START, DAYS)["oil_gas"]["legacy"]
    seeded = truth_found(truth)
    kinds = {d["kind"] for d in truth["differences"]}
    assert kinds == {"renamed_code", "late_arriving_row", "rounding_rule"}, truth  # seed 7 puts all in the window
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    summary = run_backfill(defs, instance, TEST_START, TEST_START + timedelta(days=DAYS))
    # In dual run a difference warns: the build succeeds and lists the days that differ.
    assert summary.success, summary
    differing_days = {(d["table"], d["day"]) for d in truth["differences"]}
    assert sorted(summary.parity_warnings) == sorted(f"{t.replace('.', '/')}[{d}]" for t, d in differing_days)

    outputs = OutputsArea(root=settings.outputs_root)
    reports = latest_reports(outputs)
    assert {(r["table"], r["day"]) for r in reports} == {
        (t, (TEST_START + timedelta(days=i)).isoformat())
        for t in ("gold.field_production_daily", "gold.trial_balance_daily")
        for i in range(DAYS)
    }
    assert set().union(*(report_found(r) for r in reports)) == seeded
    for report in reports:
        assert report["matched"] == ((report["table"], report["day"]) not in differing_days)
        assert report["rows_legacy"] > 0 and report["duplicate_keys_legacy"] == []
        assert all(c["abs_tol"] == 0.005 for c in report["columns"] if c["type"] == "decimal")

    # The cut-over view: the ledger matched every day after its renamed code.
    view = {t.table: t for t in cutover_view(outputs)}
    renamed = date.fromisoformat(truth["seeds"]["renamed_code_day"])
    last = TEST_START + timedelta(days=DAYS - 1)
    assert view["gold.trial_balance_daily"].consecutive_matching_days == (last - renamed).days
    assert view["gold.trial_balance_daily"].differing_days == (renamed.isoformat(),)

    # Once cut over, the same difference is an error that blocks: the run fails.
    daily = daily_partitions(settings.start_date)
    balance = next(t for t in load_parity_tables() if t.table == "gold.trial_balance_daily")
    resources = build_resources(settings, build_dbt_project(settings))
    for state, day, passes in ((CUT_OVER, renamed, False), (CUT_OVER, last, True), ("dual-run", renamed, False)):
        check = build_parity_check(replace(balance, state=state), daily)
        job = dg.define_asset_job("parity_only", selection=dg.AssetSelection.checks(check), partitions_def=daily)
        only = dg.Definitions(
            assets=[dg.AssetSpec(balance.asset_key, partitions_def=daily)],
            asset_checks=[check],
            jobs=[job],
            resources={name: resources[name] for name in ("warehouse", "landing", "outputs")},
        )
        result = only.resolve_job_def("parity_only").execute_in_process(
            # a checks-only selection has no asset to take the partitions from: the run's partition tag
            instance=instance,
            tags={"dagster/partition": day.isoformat()},
            raise_on_error=False,
        )
        (evaluation,) = result.get_asset_check_evaluations()
        assert evaluation.passed == passes
        assert evaluation.blocking == (state == CUT_OVER)
        assert evaluation.severity == (dg.AssetCheckSeverity.ERROR if state == CUT_OVER else dg.AssetCheckSeverity.WARN)
        assert result.success == (passes or state != CUT_OVER), (state, day)
        assert str(evaluation.metadata["strata/parity_report"].value).endswith("/report.md")
