"""The figures of the weekly executive report, read from Gold: the KPIs of an ISO week and the week before.

Everything the report shows is computed here, from the warehouse (and the ML forecast table for the
forecast accuracy), so the rendering (`render.py`) only formats: the same Gold data gives the same
figures, and the tests compare the PDF's numbers with Gold through `format_value`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from resources.iceberg import IcebergCatalog
    from resources.warehouse import Warehouse

KPI_SQL = """
SELECT "kpi_date", "bookings_total", "bookings_completed", "bookings_cancelled", "revenue_cents",
       "km_driven", "active_vehicles"
FROM "gold"."kpi_daily" WHERE "kpi_date" >= ? AND "kpi_date" < ? ORDER BY "kpi_date"
"""
FLEET_SQL = """
SELECT "health_date", CAST(SUM("readings") AS BIGINT) AS "readings",
       CAST(SUM("fault_readings") AS BIGINT) AS "fault_readings"
FROM "gold"."fleet_health_daily" WHERE "health_date" >= ? AND "health_date" < ?
GROUP BY "health_date" ORDER BY "health_date"
"""
FLEET_SIZE_SQL = 'SELECT COUNT(*) AS "vehicles" FROM "gold"."dim_vehicles"'
HOURLY_SQL = """
SELECT CAST("hour_of_day" AS BIGINT) AS "hour_of_day", CAST(SUM("bookings_started") AS BIGINT) AS "bookings"
FROM "gold"."demand_features_hourly" WHERE "feature_date" >= ? AND "feature_date" < ?
GROUP BY "hour_of_day" ORDER BY "hour_of_day"
"""
ACTUALS_SQL = """
SELECT "feature_date", "start_station_id", CAST("hour_of_day" AS BIGINT) AS "hour_of_day",
       CAST("bookings_started" AS BIGINT) AS "bookings_started"
FROM "gold"."demand_features_hourly" WHERE "feature_date" >= ? AND "feature_date" < ?
"""
FORECAST_TABLE = "ml.demand_forecast"
# The Gold tables the report reads per day (partition keys are recorded in its metadata).
DAILY_SOURCES = ("gold/kpi_daily", "gold/fleet_health_daily", "gold/demand_features_hourly")


@dataclass(frozen=True)
class Kpi:
    name: str
    unit: str  # "count", "eur", "km", "pct"
    this_week: float | int | Decimal | None
    previous_week: float | int | Decimal | None

    @property
    def change(self) -> str:
        """Week over week: relative for amounts, in percentage points for percentages."""
        if self.this_week is None or self.previous_week is None:
            return "n/a"
        if self.unit == "pct":
            return f"{float(self.this_week) - float(self.previous_week):+.1f} pp"
        if not self.previous_week:
            return "n/a"
        return f"{(float(self.this_week) / float(self.previous_week) - 1) * 100:+.1f}%"


def format_value(value: float | int | Decimal | None, unit: str) -> str:
    """How the report prints a figure (tests print Gold's figures the same way to compare)."""
    if value is None:
        return "n/a"
    if unit == "count":
        return f"{int(value):,}"
    if unit == "eur":
        return f"EUR {Decimal(value):,.2f}"
    if unit == "km":
        return f"{float(value):,.1f} km"
    return f"{float(value):.1f}%"


@dataclass
class WeekFigures:
    start: date  # Monday
    kpis: list[Kpi]
    daily: dict[str, list]  # per day of this week: date, bookings, previous week's bookings, revenue, ...
    hourly: list[tuple[int, int]]  # (hour of day, bookings)
    forecast_snapshot: int | None = None
    rows_read: dict[str, int] = field(default_factory=dict)

    @property
    def end(self) -> date:
        return self.start + timedelta(days=7)

    @property
    def label(self) -> str:
        year, week, _ = self.start.isocalendar()
        return f"{year}-W{week:02d}"


def week_dates(start: date) -> list[date]:
    return [start + timedelta(days=i) for i in range(7)]


def _sum(table: pa.Table, column: str) -> int | float | Decimal:
    return sum(v for v in table.column(column).to_pylist() if v is not None) if table.num_rows else 0


def forecast_accuracy(
    iceberg: IcebergCatalog, warehouse: Warehouse, start: date, end: date, actual: pa.Table | None = None
) -> tuple[float | None, int | None]:
    """100 x (1 - WAPE) of the demand forecast over [start, end) against the bookings that happened
    (`actual`: ACTUALS_SQL's rows for the window, when already read), and the forecast table's snapshot
    id; (None, None) when no forecast covers the week."""
    table = iceberg.table_or_none(FORECAST_TABLE)
    if table is None or table.current_snapshot() is None:
        return None, None
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    forecast = table.scan(
        row_filter=And(
            GreaterThanOrEqual("forecast_date", start.isoformat()), LessThan("forecast_date", end.isoformat())
        ),
        selected_fields=("forecast_date", "start_station_id", "hour_of_day", "expected_bookings"),
    ).to_arrow()
    snapshot = table.current_snapshot().snapshot_id
    if forecast.num_rows == 0:
        return None, snapshot
    if actual is None:
        actual = warehouse.query_arrow(ACTUALS_SQL, [start, end])
    actual = actual.rename_columns(["forecast_date", "start_station_id", "hour_of_day", "bookings_started"])
    keys = ["forecast_date", "start_station_id", "hour_of_day"]
    joined = forecast.join(actual, keys=keys, join_type="full outer")
    expected = [v or 0 for v in joined.column("expected_bookings").to_pylist()]
    happened = [v or 0 for v in joined.column("bookings_started").to_pylist()]
    total = sum(happened)
    if total == 0:
        return None, snapshot
    error = sum(abs(e - a) for e, a in zip(expected, happened, strict=True))
    return round(100 * (1 - error / total), 1), snapshot


def read_week(warehouse: Warehouse, iceberg: IcebergCatalog, start: date) -> WeekFigures:
    """The figures of the ISO week starting on Monday `start`, and of the week before for comparison."""
    previous, end = start - timedelta(days=7), start + timedelta(days=7)
    # One warehouse connection for all: at scale 1 opening one per query took most of the read's time.
    kpi, fleet, fleet_size_rows, hourly, actual, previous_actual = warehouse.query_arrow_many(
        [
            (KPI_SQL, [previous, end]),
            (FLEET_SQL, [previous, end]),
            (FLEET_SIZE_SQL, []),
            (HOURLY_SQL, [start, end]),
            (ACTUALS_SQL, [start, end]),
            (ACTUALS_SQL, [previous, start]),
        ]
    )
    fleet_size = int(fleet_size_rows.column("vehicles")[0].as_py())
    accuracy, forecast_snapshot = forecast_accuracy(iceberg, warehouse, start, end, actual)
    previous_accuracy, _ = forecast_accuracy(iceberg, warehouse, previous, start, previous_actual)

    def week_of(table: pa.Table, column: str, first: date) -> pa.Table:
        days = set(week_dates(first))
        mask = [d in days for d in table.column(column).to_pylist()]
        return table.filter(pa.array(mask, pa.bool_()))

    weeks = {"this": start, "previous": previous}
    k = {name: week_of(kpi, "kpi_date", first) for name, first in weeks.items()}
    f = {name: week_of(fleet, "health_date", first) for name, first in weeks.items()}

    def cancellation(t: pa.Table) -> float | None:
        total = _sum(t, "bookings_total")
        return round(100 * _sum(t, "bookings_cancelled") / total, 1) if total else None

    def utilisation(t: pa.Table) -> float | None:
        if not t.num_rows or not fleet_size:
            return None
        return round(100 * _sum(t, "active_vehicles") / (7 * fleet_size), 1)

    def fault_share(t: pa.Table) -> float | None:
        readings = _sum(t, "readings")
        return round(100 * _sum(t, "fault_readings") / readings, 1) if readings else None

    def revenue(t: pa.Table) -> Decimal:
        return Decimal(int(_sum(t, "revenue_cents"))) / 100

    kpis = [
        Kpi("Bookings", "count", int(_sum(k["this"], "bookings_total")), int(_sum(k["previous"], "bookings_total"))),
        Kpi(
            "Completed trips",
            "count",
            int(_sum(k["this"], "bookings_completed")),
            int(_sum(k["previous"], "bookings_completed")),
        ),
        Kpi("Cancellation rate", "pct", cancellation(k["this"]), cancellation(k["previous"])),
        Kpi("Revenue", "eur", revenue(k["this"]), revenue(k["previous"])),
        Kpi(
            "Distance driven", "km", round(_sum(k["this"], "km_driven"), 1), round(_sum(k["previous"], "km_driven"), 1)
        ),
        Kpi("Fleet utilisation", "pct", utilisation(k["this"]), utilisation(k["previous"])),
        Kpi("Fault readings", "pct", fault_share(f["this"]), fault_share(f["previous"])),
        Kpi("Forecast accuracy", "pct", accuracy, previous_accuracy),
    ]

    def by_day(table: pa.Table, date_column: str, column: str, first: date) -> list:
        values = dict(zip(table.column(date_column).to_pylist(), table.column(column).to_pylist(), strict=True))
        return [values.get(day, 0) or 0 for day in week_dates(first)]

    daily = {
        "date": week_dates(start),
        "bookings": by_day(k["this"], "kpi_date", "bookings_total", start),
        "bookings_previous": by_day(k["previous"], "kpi_date", "bookings_total", previous),
        "revenue_eur": [c / 100 for c in by_day(k["this"], "kpi_date", "revenue_cents", start)],
        "active_vehicles": by_day(k["this"], "kpi_date", "active_vehicles", start),
        "fault_readings": by_day(f["this"], "health_date", "fault_readings", start),
    }
    return WeekFigures(
        start=start,
        kpis=kpis,
        daily=daily,
        hourly=list(zip(hourly.column("hour_of_day").to_pylist(), hourly.column("bookings").to_pylist(), strict=True)),
        forecast_snapshot=forecast_snapshot,
        rows_read={"gold.kpi_daily": kpi.num_rows, "gold.fleet_health_daily": fleet.num_rows},
    )
