"""The legacy batch's outputs for the oil-and-gas domain, as the old nightly jobs wrote them.

During a migration the old job and the new one run side by side; the parity checks compare them. So the
demo writes, for each finished day, what the legacy batch produced for it: CSV files in the landing zone
under `legacy/`, with legacy column names (`Segment 8`, `OIL BBL`), legacy types (SAS `DATE9.` and
`DATETIME.` dates, amounts printed with 2 decimals) and a few realistic differences, seeded and recorded
in the ground truth so a test can demand that parity finds exactly them:

- a rounding rule: the legacy production summary adds up each well's oil already rounded to 2 decimals
  (its well-test file kept 2), so a field's total can drift from the exact sum by more than half a
  cent-barrel (gas and water are summed first and rounded once, which the declared tolerance allows);
- a late-arriving row: one well's reading of one day came after the legacy extract's cut-off, so the
  legacy summary of its field lacks it;
- a renamed code: one day the legacy ledger ran with a stale code table and booked operating costs
  (account 5100) under the retired code 5150.

The legacy ledger always writes receivables as 1205 (renamed 1200 by the migration); that rename is
declared in the parity configuration, so it is not a difference. Everything is a pure function of the
config, like the rest of the demo.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np

from demo import oilgas
from demo.world import HOUR_US, DemoConfig, to_us

LEGACY_PREFIX = "legacy"
PRODUCTION_FILE = "legacy/prodsum/PRODSUM_{day:%Y%m%d}.csv"
TRIAL_BALANCE_FILE = "legacy/gl_trial_balance/GLTB_{day:%Y%m%d}.csv"
PRODUCTION_TABLE, TRIAL_BALANCE_TABLE = "gold.field_production_daily", "gold.trial_balance_daily"
LEGACY_BATCH_RUNS_AT = timedelta(days=1)  # the nightly legacy batch runs as the day closes
CENT = Decimal("0.01")
HALF_CENT = Decimal("0.005")  # what printing with 2 decimals may change, and no more
RECEIVABLE_LEGACY_CODE = "1205"  # declared in assets/quality/parity.yaml (value_map)
RETIRED_OPEX_CODE = "5150"  # the seeded renamed code: not declared anywhere
VOLUMES = ("oil_bbl", "gas_mcf", "water_bbl")
LEGACY_VOLUME = {"oil_bbl": "OIL BBL", "gas_mcf": "GAS MCF", "water_bbl": "WATER BBL"}


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _date9(day: date) -> str:
    return day.strftime("%d%b%Y").upper()  # SAS DATE9.: 01OCT2026


def _datetime20(day: date) -> str:
    return f"{_date9(day)}:00:00:00"  # SAS DATETIME20.: 01OCT2026:00:00:00


def seeded_days(cfg: DemoConfig) -> dict[str, object]:
    """Where the seeded differences fall: the renamed code's day, the late reading's day and well."""
    rng = np.random.default_rng([cfg.seed, 16, 99])
    n_wells = oilgas.wells_per_field(cfg) * len(oilgas.FIELDS)
    return {
        "renamed_code_day": cfg.start + timedelta(days=int(rng.integers(0, max(1, cfg.days // 2)))),
        "late_row_day": cfg.start + timedelta(days=int(rng.integers(0, cfg.days))),
        "late_row_well": int(rng.integers(1, n_wells + 1)),
    }


def finished_days(cfg: DemoConfig, as_of: datetime) -> list[date]:
    """The days whose legacy batch has run by `as_of`."""
    days = [cfg.start + timedelta(days=i) for i in range(cfg.days)]
    return [d for d in days if datetime.combine(d, datetime.min.time()) + LEGACY_BATCH_RUNS_AT <= as_of]


def _csv(header: list[str], rows: Iterable[list]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # the legacy host wrote CRLF
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def _write(landing_root: Path, key: str, data: bytes) -> None:
    path = Path(landing_root) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)  # a reader never sees half a file


def production_day(cfg: DemoConfig, day: date, seeds: dict) -> tuple[bytes, list[dict]]:
    """The legacy production summary of `day` and the differences seeded into it."""
    per_field = oilgas.wells_per_field(cfg)
    readings = oilgas.production_day(cfg, day, per_field * len(oilgas.FIELDS))
    late_well = seeds["late_row_well"] if day == seeds["late_row_day"] else None
    rows, differences = [], []
    for field_index, (field_name, _basin) in enumerate(oilgas.FIELDS):
        field_id = field_index + 1
        wells = [i for i, well in enumerate(readings["well_id"]) if (well - 1) // per_field == field_index]
        exact = {v: sum((readings[v][i] for i in wells), Decimal(0)) for v in VOLUMES}
        seen = [i for i in wells if readings["well_id"][i] != late_well]
        legacy = {v: _cents(sum((readings[v][i] for i in seen), Decimal(0))) for v in VOLUMES}
        legacy["oil_bbl"] = sum((_cents(readings["oil_bbl"][i]) for i in seen), Decimal(0))  # the rounding rule
        rows.append([_date9(day), field_id, field_name, len(seen), *(f"{legacy[v]:.2f}" for v in VOLUMES)])
        columns = [v for v in VOLUMES if abs(legacy[v] - exact[v]) > HALF_CENT]
        if len(seen) != len(wells):
            columns = ["wells_reporting", *columns]
        if columns:
            differences.append(
                {
                    "table": PRODUCTION_TABLE,
                    "day": day.isoformat(),
                    "kind": "late_arriving_row" if len(seen) != len(wells) else "rounding_rule",
                    "key": {"production_date": day.isoformat(), "field_id": field_id},
                    "columns": columns,
                }
            )
    header = ["PROD DT", "FIELD NO", "FIELD NAME", "WELL CNT", *(LEGACY_VOLUME[v] for v in VOLUMES)]
    return _csv(header, rows), differences


def trial_balance_day(cfg: DemoConfig, day: date, seeds: dict) -> tuple[bytes, list[dict]]:
    """The legacy trial balance of `day` (from the same ledger lines) and the differences seeded into it."""
    first_hour = to_us(datetime.combine(day, datetime.min.time())) // HOUR_US
    accounts: dict[str, list] = {}  # account -> [lines, debits, credits]
    for hour in range(first_hour, first_hour + 24):
        lines, _control = oilgas.journal_hour(cfg, hour)
        for account, amount in zip(lines["account"].to_pylist(), lines["amount"].to_pylist(), strict=True):
            totals = accounts.setdefault(account, [0, Decimal(0), Decimal(0)])
            totals[0] += 1
            totals[1 if amount > 0 else 2] += abs(amount)
    stale_code_table = day == seeds["renamed_code_day"]
    rows, differences = [], []
    for account, (count, debit, credit) in sorted(accounts.items()):
        code = {oilgas.RECEIVABLE: RECEIVABLE_LEGACY_CODE}.get(account, account)
        if stale_code_table and account == oilgas.OPEX:
            code = RETIRED_OPEX_CODE
            differences += [
                {
                    "table": TRIAL_BALANCE_TABLE,
                    "day": day.isoformat(),
                    "kind": "renamed_code",
                    "only_in": side,
                    "key": {"posting_date": day.isoformat(), "account": shown},
                }
                for side, shown in (("legacy", RETIRED_OPEX_CODE), ("new", account))
            ]
        rows.append(
            [
                _datetime20(day),
                code,
                count,
                f"{_cents(debit):.2f}",
                f"{_cents(credit):.2f}",
                f"{_cents(debit - credit):.2f}",
            ]
        )
    header = ["POSTING_DT", "Segment 8", "LINE CNT", "DR AMT", "CR AMT", "NET AMT"]
    return _csv(header, rows), differences


def write_legacy_outputs(cfg: DemoConfig, landing_root: Path, as_of: datetime) -> dict:
    """Write the legacy outputs of every day whose legacy batch has run by `as_of` (rewriting the same
    bytes for days written before); return the seeds and every seeded difference, for the ground truth."""
    seeds = seeded_days(cfg)
    differences: list[dict] = []
    days = finished_days(cfg, as_of)
    for day in days:
        production, production_differences = production_day(cfg, day, seeds)
        balance, balance_differences = trial_balance_day(cfg, day, seeds)
        _write(landing_root, PRODUCTION_FILE.format(day=day), production)
        _write(landing_root, TRIAL_BALANCE_FILE.format(day=day), balance)
        differences += production_differences + balance_differences
    return {
        "days": [d.isoformat() for d in days],
        "seeds": {k: v.isoformat() if isinstance(v, date) else v for k, v in seeds.items()},
        "differences": differences,
    }
