"""The second domain (oil & gas), added as configuration only: it loads end to end, Gold equals the
generator's exact-decimal ground truth, and the trial balance sums to exactly zero."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import dagster as dg
import pyarrow as pa
import pytest

from assets.bronze.conform import conform_rows
from assets.bronze.contracts import file_drop_contracts
from definitions import build_definitions
from demo import oilgas
from demo.world import DemoConfig, hours_elapsed, to_us
from jobs.backfill import run_backfill, table_row_counts
from tests.conftest import TEST_START
from tests.support import generate_demo, warehouse_tables

DAYS = 2


def test_a_month_of_journal_lines_balances_to_exactly_zero_through_the_contract():
    """30 days of ledger lines as delivered, conformed by the contract into DECIMAL(19,4): the sum is
    exactly zero (the same amounts as binary floats are not: that drift is what decimals prevent)."""
    cfg = DemoConfig(start=date(2026, 10, 1), days=30, scale=0.01, seed=7)
    contract = file_drop_contracts()[oilgas.JOURNAL_LINES]
    total, float_total, lines = Decimal(0), 0.0, 0
    for hour in hours_elapsed(cfg, to_us(cfg.end)):
        delivered, _control = oilgas.journal_hour(cfg, hour)
        conformed = conform_rows(delivered, contract, "journal_lines.parquet")
        assert conformed.rejects.num_rows == 0
        assert conformed.rows.schema.field("amount").type == pa.decimal128(19, 4)
        amounts = conformed.rows.column("amount").to_pylist()
        total += sum(amounts, Decimal(0))
        float_total += sum(float(a) for a in amounts)
        lines += len(amounts)
    assert lines > 720 * 3  # a month of hours, several lines each
    assert total == Decimal(0)
    assert float_total != 0.0  # binary floats drift over the same lines


@pytest.mark.slow
def test_the_domain_loads_end_to_end_and_gold_equals_its_ground_truth(settings):
    truth = generate_demo(settings, TEST_START, DAYS)["oil_gas"]
    defs = build_definitions(settings)
    summary = run_backfill(defs, dg.DagsterInstance.ephemeral(), TEST_START, TEST_START + timedelta(days=DAYS))
    assert summary.success, summary
    assert summary.checks_failed == []

    counts = table_row_counts(defs)
    for table, rows in truth["row_counts"].items():
        assert counts[f"bronze.{table}"] == rows, table

    tables = warehouse_tables(settings)
    production = tables["gold.field_production_daily"]
    assert production.schema.field("oil_bbl").type == pa.decimal128(19, 4)
    oil = {}
    for row in production.to_pylist():
        oil.setdefault(str(row["production_date"]), {})[str(row["field_id"])] = str(row["oil_bbl"])
    assert oil == truth["oil_bbl_per_field_day"]

    balance = tables["gold.trial_balance_daily"]
    assert balance.schema.field("net_amount").type == pa.decimal128(19, 4)
    nets = {}
    for row in balance.to_pylist():
        nets.setdefault(str(row["posting_date"]), {})[row["account"]] = str(row["net_amount"])
    assert nets == truth["trial_balance"]
    assert sum((Decimal(v) for day in nets.values() for v in day.values()), Decimal(0)) == 0

    reconciliation = tables["gold.trial_balance_reconciliation"].to_pylist()
    # A table has no row order (DuckDB may insert the days of one run in either order): compare the days.
    assert sorted(r["posting_date"].isoformat() for r in reconciliation) == sorted(truth["trial_balance"])
    assert all(r["balanced"] and r["net_amount"] == 0 and r["lines"] == r["control_lines"] for r in reconciliation)
    variance = tables["gold.field_production_variance"].to_pylist()
    assert len(variance) == DAYS * len(oilgas.FIELDS)
