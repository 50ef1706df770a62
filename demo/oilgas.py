"""The second demo domain: an oil-and-gas operator's well-production system and its finance feed.

Arrives the way a migrated legacy job does: OLTP tables (`fields`, `wells`, `well_production`) and
hourly general-ledger drops (`journal_lines` with the ledger's `journal_control_totals`), all declared in
`source_contracts.yaml`. Like the fleet, everything is a pure function of the config (seed, scale,
window) and of the hour or day it describes; `as_of` only decides what is visible. Money and volumes are
`Decimal`s with their contract's scale, so the ground truth is exact, not float.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa

from assets.bronze.contracts import file_drop_contracts, oltp_contracts
from demo.world import HOUR_US, DemoConfig, from_us, scaled_count, to_us

OLTP_TABLES = ("fields", "wells", "well_production")
JOURNAL_LINES = "journal_lines"
CONTROL_TOTALS = "journal_control_totals"
DROP_FEEDS = (JOURNAL_LINES, CONTROL_TOTALS)

FIELDS = (("Brent North", "North Sea"), ("Permian West", "Permian"), ("Vaca Muerta", "Neuquen"))
ROYALTY_RATES = (Decimal("0.125000"), Decimal("0.187500"), Decimal("0.120000"))
# (account, what it books): production revenue against receivables, operating costs against payables.
REVENUE, RECEIVABLE, OPEX, PAYABLE = "4000", "1200", "5100", "2100"
CURRENCIES = (("EUR", Decimal("1.000000")), ("USD", Decimal("0.912345")), ("GBP", Decimal("1.164210")))
REPORTED_AT = timedelta(hours=23, minutes=30)  # a day's readings are entered at 23:30 that day
MASTER_DATA_AGE = timedelta(days=400)  # fields and wells exist long before the window
UNIT = Decimal("0.0001")


def wells_per_field(cfg: DemoConfig) -> int:
    return scaled_count(cfg.scale, 200, 2)


def _rng(cfg: DemoConfig, *stream: int) -> np.random.Generator:
    """A generator keyed by the seed and a stream (e.g. the day or hour), independent of as_of."""
    return np.random.default_rng([cfg.seed, 16, *stream])


def _decimals(values: np.ndarray, scale: int = 4) -> list[Decimal]:
    quantum = Decimal(1).scaleb(-scale)
    return [Decimal(str(round(float(v), scale))).quantize(quantum) for v in values]


def _table(name: str, columns: dict[str, list | pa.Array]) -> pa.Table:
    schema = oltp_contracts()[name].arrow_schema()
    return pa.Table.from_arrays([pa.array(columns[f.name], f.type) for f in schema], schema=schema)


def master_data(cfg: DemoConfig) -> tuple[pa.Table, pa.Table]:
    """`fields` and `wells`: fixed for the window (created well before it)."""
    stamp = cfg.start_dt - MASTER_DATA_AGE
    fields = _table(
        "fields",
        {
            "field_id": list(range(1, len(FIELDS) + 1)),
            "field_name": [name for name, _ in FIELDS],
            "basin": [basin for _, basin in FIELDS],
            "royalty_rate": list(ROYALTY_RATES),
            "created_at": [stamp] * len(FIELDS),
            "updated_at": [stamp] * len(FIELDS),
        },
    )
    per_field = wells_per_field(cfg)
    n = per_field * len(FIELDS)
    rng = _rng(cfg, 0)
    wells = _table(
        "wells",
        {
            "well_id": list(range(1, n + 1)),
            "field_id": [i // per_field + 1 for i in range(n)],
            "well_name": [f"{FIELDS[i // per_field][0][:5].upper()}-{i % per_field + 1:03d}" for i in range(n)],
            "well_type": ["producer"] * n,
            "working_interest": _decimals(rng.uniform(0.25, 1.0, n), 6),
            "spud_date": [cfg.start - timedelta(days=int(d)) for d in rng.integers(500, 3000, n)],
            "created_at": [stamp] * n,
            "updated_at": [stamp] * n,
        },
    )
    return fields, wells


def production_day(cfg: DemoConfig, day: date, n_wells: int) -> dict[str, list]:
    """One reading per well for `day` (entered at 23:30): volumes to 4 decimals, pressures, downtime."""
    rng = _rng(cfg, 1, day.toordinal())
    base = _rng(cfg, 2).uniform(200, 1500, n_wells)  # each well's own level
    downtime = np.where(rng.random(n_wells) < 0.1, rng.uniform(1, 12, n_wells).round(2), 0.0)
    uptime = (24 - downtime) / 24
    oil = base * uptime * rng.uniform(0.9, 1.1, n_wells)
    stamp = datetime.combine(day, datetime.min.time()) + REPORTED_AT
    first_id = (day - cfg.start).days * n_wells + 1
    return {
        "reading_id": list(range(first_id, first_id + n_wells)),
        "well_id": list(range(1, n_wells + 1)),
        "production_date": [day] * n_wells,
        "oil_bbl": _decimals(oil),
        "gas_mcf": _decimals(oil * rng.uniform(2.5, 3.5, n_wells)),
        "water_bbl": _decimals(oil * rng.uniform(0.2, 0.8, n_wells)),
        "tubing_pressure_psi": rng.uniform(300, 1800, n_wells).round(1).tolist(),
        "casing_pressure_psi": rng.uniform(800, 2600, n_wells).round(1).tolist(),
        "downtime_hours": downtime.tolist(),
        "created_at": [stamp] * n_wells,
        "updated_at": [stamp] * n_wells,
    }


def oltp_tables_at(cfg: DemoConfig, as_of: datetime) -> dict[str, pa.Table]:
    """The production system's tables as of `as_of`: a day's readings exist once they were entered."""
    fields, wells = master_data(cfg)
    days = [cfg.start + timedelta(days=i) for i in range(cfg.days)]
    entered = [d for d in days if datetime.combine(d, datetime.min.time()) + REPORTED_AT <= as_of]
    columns: dict[str, list] = {}
    for day in entered:
        for name, values in production_day(cfg, day, wells.num_rows).items():
            columns.setdefault(name, []).extend(values)
    production = (
        _table("well_production", columns)
        if columns
        else oltp_contracts()["well_production"].arrow_schema().empty_table()
    )
    return {"fields": fields, "wells": wells, "well_production": production}


def journal_hour(cfg: DemoConfig, hour: int) -> tuple[pa.Table, pa.Table]:
    """The ledger's postings of one hour (balanced journals) and that batch's control totals."""
    rng = _rng(cfg, 3, hour)
    hour_start = from_us(hour * HOUR_US)
    tag = f"{hour_start:%Y%m%d%H}"
    rows: dict[str, list] = {c: [] for c in file_drop_contracts()[JOURNAL_LINES].column_names}
    for j in range(int(rng.integers(1, 4))):
        revenue = rng.random() < 0.5
        debit_account, credit_account = (RECEIVABLE, REVENUE) if revenue else (OPEX, PAYABLE)
        field = int(rng.integers(0, len(FIELDS)))
        currency, fx = CURRENCIES[int(rng.integers(0, len(CURRENCIES)))]
        debits = [Decimal(int(v)) * UNIT for v in rng.integers(1_000_000, 500_000_000, int(rng.integers(1, 4)))]
        lines = [(debit_account, d) for d in debits] + [(credit_account, -sum(debits))]  # a journal balances
        minute = int(rng.integers(0, 60))
        for n, (account, amount) in enumerate(lines, 1):
            rows["journal_id"].append(f"JE-{tag}-{j + 1:02d}")
            rows["line_no"].append(n)
            rows["posted_at"].append(hour_start + timedelta(minutes=minute, seconds=n))
            rows["account"].append(account)
            rows["cost_center"].append(f"CC-{field + 1:02d}")
            rows["description"].append(f"{'Sales' if revenue else 'Operating costs'} {FIELDS[field][0]}")
            rows["amount"].append(amount)
            rows["currency"].append(currency)
            rows["amount_txn"].append((amount / fx).quantize(UNIT))
            rows["fx_rate"].append(fx)
    lines_table = pa.table(rows, schema=file_drop_contracts()[JOURNAL_LINES].arrow_schema())
    control = pa.table(
        {
            "batch_id": [f"GL-{tag}"],
            "batch_hour": [hour_start],
            "line_count": [len(rows["amount"])],
            "debit_total": [sum((a for a in rows["amount"] if a > 0), Decimal("0.0000"))],
            "credit_total": [-sum((a for a in rows["amount"] if a < 0), Decimal("0.0000"))],
        },
        schema=file_drop_contracts()[CONTROL_TOTALS].arrow_schema(),
    )
    return lines_table, control


class OilGasTally:
    """Ground truth of the domain, accumulated from the very rows written."""

    def __init__(self) -> None:
        self.journal_lines = 0
        self.trial_balance: dict[str, dict[str, Decimal]] = {}  # day -> account -> net amount

    def add_hour(self, hour: int, lines: pa.Table) -> None:
        day = from_us(hour * HOUR_US).date().isoformat()
        self.journal_lines += lines.num_rows
        accounts = self.trial_balance.setdefault(day, {})
        for account, amount in zip(lines["account"].to_pylist(), lines["amount"].to_pylist(), strict=True):
            accounts[account] = accounts.get(account, Decimal("0.0000")) + amount

    def truth(self, tables: dict[str, pa.Table], hours: int) -> dict:
        production: dict[str, dict[str, str]] = {}
        readings = tables["well_production"]
        field_of = dict(
            zip(tables["wells"]["well_id"].to_pylist(), tables["wells"]["field_id"].to_pylist(), strict=True)
        )
        for well, day, oil in zip(
            readings["well_id"].to_pylist(),
            readings["production_date"].to_pylist(),
            readings["oil_bbl"].to_pylist(),
            strict=True,
        ):
            per_field = production.setdefault(day.isoformat(), {})
            key = str(field_of[well])
            per_field[key] = str(Decimal(per_field.get(key, "0.0000")) + oil)
        return {
            "row_counts": {
                **{name: tables[name].num_rows for name in OLTP_TABLES},
                JOURNAL_LINES: self.journal_lines,
                CONTROL_TOTALS: hours,
            },
            "oil_bbl_per_field_day": dict(sorted(production.items())),
            "trial_balance": {
                day: {account: str(net) for account, net in sorted(accounts.items())}
                for day, accounts in sorted(self.trial_balance.items())
            },
        }


def hour_of(moment: datetime) -> int:
    return to_us(moment) // HOUR_US
