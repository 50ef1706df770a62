"""The dbt project: parses for Trino, compiles to Trino-portable SQL, and rebuilds daily windows idempotently.

Everything runs in-process through dbt's Python API against a scratch DuckDB warehouse whose `bronze`
schema holds tiny hand-made tables with exactly the contract columns. No Trino server exists here, so
portability is proven by compiling on DuckDB and checking every compiled statement as Trino SQL: the
project's SQL is written once for both engines (no adapter-dispatched expressions), so the DuckDB
rendering is the SQL Trino runs.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from datetime import date, datetime
from pathlib import Path

import pytest

from assets.bronze.contracts import TableContract, file_drop_contracts, oltp_contracts
from assets.bronze.weather import WEATHER_SCHEMA

DBT_DIR = Path(__file__).resolve().parent.parent / "dbt"

# The oil & gas domain (configuration only): production OLTP tables and the hourly ledger feeds.
OILGAS_TABLES = ("fields", "wells", "well_production", "journal_lines", "journal_control_totals")
OILGAS_MARTS = ("field_production_daily", "field_production_variance", "trial_balance_daily")
OILGAS_MARTS += ("trial_balance_reconciliation",)
STAGING = {
    f"stg_{name}" for name in ("customers", "stations", "vehicles", "bookings", "payments", "telemetry", *OILGAS_TABLES)
}
DAILY_MODELS = {
    "telemetry_clean",
    "telemetry_quarantine",
    "fct_bookings",
    "fleet_health_daily",
    "kpi_daily",
    "demand_features_hourly",
    *OILGAS_MARTS,
}
# Daily-partitioned in Dagster but a view in dbt: the hourly -> daily mapping starts here.
DAILY_VIEWS = {"stg_telemetry", "stg_journal_lines", "stg_journal_control_totals"}
MODEL_SCHEMAS = {
    **dict.fromkeys(STAGING, "silver"),
    "bookings_valid": "silver",
    "bookings": "silver",
    "telemetry_clean": "silver",
    "telemetry_quarantine": "silver",
    "bookings_quarantine": "silver",
    # fed by the weather API; empty until its first fetch (macros/weather.sql: source_or_empty)
    "stg_weather_forecasts": "silver",
    "weather_conditions": "silver",
    **dict.fromkeys(
        ("dim_customers", "dim_stations", "dim_vehicles", "fct_bookings", "fleet_health_daily", "kpi_daily"),
        "gold",
    ),
    "demand_features_hourly": "gold",
    "dim_customers_unmasked": "gold_restricted",  # personal data in clear, for the PII reader role
    **dict.fromkeys(OILGAS_MARTS, "gold"),
}
BRONZE_TABLES = {"customers", "stations", "vehicles", "bookings", "payments", "telemetry", "weather_forecasts"}
BRONZE_TABLES |= set(OILGAS_TABLES)

DUCKDB_TYPES = {
    "int64": "BIGINT",
    "float64": "DOUBLE",
    "string": "VARCHAR",
    "bool": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}


def duckdb_type(type_name: str) -> str:
    """DuckDB's type for a contract type: `decimal(p,s)` and `varchar(n)` are DuckDB types as written."""
    return DUCKDB_TYPES.get(type_name, type_name.upper())


DAY1 = {"window_start": "2026-10-01", "window_end": "2026-10-02"}
DAY2 = {"window_start": "2026-10-02", "window_end": "2026-10-03"}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


T0 = ts("2026-09-01 00:00:00")

# Scratch Bronze rows, in contract column order. Two days of bookings in every status, a trip that
# crosses midnight (booked on day 1, paid on day 2), a refunded payment, a duplicated telemetry reading
# and a reading outside both windows.
SCRATCH_ROWS: dict[str, list[tuple]] = {
    "customers": [
        (1, "Ada Lovelace", "ada@example.com", "Lyon", "private", T0, T0),
        (2, "Alan Turing", "alan@example.com", "Paris", "business", T0, T0),
        (3, "Grace Hopper", "grace@example.com", "Lyon", "private", T0, T0),
    ],
    "stations": [
        (10, "Part-Dieu", "Lyon", 45.76, 4.86, 20, T0, T0),
        (11, "Bellecour", "Lyon", 45.757, 4.832, 15, T0, T0),
    ],
    "vehicles": [
        (100, "e_scooter", "Ninebot G30", 10, T0, T0, T0),
        (101, "e_bike", "VanMoof S5", 11, T0, T0, T0),
        (102, "e_car", "Renault Zoe", 10, T0, T0, T0),
    ],
    "bookings": [
        # booking_id, customer, vehicle, start, end, status, booked, started, ended, km, created, updated
        (
            1,
            1,
            100,
            10,
            11,
            "completed",
            ts("2026-10-01 08:05"),
            ts("2026-10-01 08:10"),
            ts("2026-10-01 08:40:30"),
            5.2,
            ts("2026-10-01 08:05"),
            ts("2026-10-01 08:40:30"),
        ),
        (
            2,
            2,
            101,
            11,
            None,
            "cancelled",
            ts("2026-10-01 08:30"),
            None,
            None,
            None,
            ts("2026-10-01 08:30"),
            ts("2026-10-01 08:45"),
        ),
        (
            3,
            3,
            102,
            10,
            None,
            "active",
            ts("2026-10-01 23:50"),
            ts("2026-10-01 23:55"),
            None,
            None,
            ts("2026-10-01 23:50"),
            ts("2026-10-01 23:55"),
        ),
        (
            4,
            1,
            101,
            11,
            None,
            "reserved",
            ts("2026-10-01 12:00"),
            None,
            None,
            None,
            ts("2026-10-01 12:00"),
            ts("2026-10-01 12:00"),
        ),
        (
            8,
            2,
            100,
            10,
            11,
            "completed",
            ts("2026-10-01 23:30"),
            ts("2026-10-01 23:35"),
            ts("2026-10-02 00:20"),
            7.5,
            ts("2026-10-01 23:30"),
            ts("2026-10-02 00:20"),
        ),
        (
            5,
            2,
            100,
            10,
            10,
            "completed",
            ts("2026-10-02 09:00"),
            ts("2026-10-02 09:02"),
            ts("2026-10-02 09:30"),
            3.0,
            ts("2026-10-02 09:00"),
            ts("2026-10-02 09:30"),
        ),
        (
            6,
            3,
            102,
            10,
            11,
            "completed",
            ts("2026-10-02 09:15"),
            ts("2026-10-02 09:20"),
            ts("2026-10-02 10:00"),
            12.0,
            ts("2026-10-02 09:15"),
            ts("2026-10-02 10:00"),
        ),
        (
            7,
            1,
            101,
            11,
            None,
            "cancelled",
            ts("2026-10-02 18:00"),
            None,
            None,
            None,
            ts("2026-10-02 18:00"),
            ts("2026-10-02 18:05"),
        ),
    ],
    "payments": [
        (
            1,
            1,
            1250,
            "EUR",
            "captured",
            ts("2026-10-01 08:41"),
            ts("2026-10-01 08:41"),
            ts("2026-10-01 08:41"),
        ),
        (
            2,
            5,
            900,
            "EUR",
            "refunded",
            ts("2026-10-02 09:31"),
            ts("2026-10-02 09:31"),
            ts("2026-10-02 11:00"),
        ),
        (
            3,
            6,
            2100,
            "EUR",
            "captured",
            ts("2026-10-02 10:00"),
            ts("2026-10-02 10:00"),
            ts("2026-10-02 10:00"),
        ),
        (
            4,
            8,
            1500,
            "EUR",
            "captured",
            ts("2026-10-02 00:21"),
            ts("2026-10-02 00:21"),
            ts("2026-10-02 00:21"),
        ),
    ],
    "telemetry": [
        # vehicle_id, ts, lat, lon, speed_kmh, battery_pct, odometer_km, fault_code
        (100, ts("2026-10-01 08:10"), 45.76, 4.86, 0.0, 90.0, 1000.0, None),
        (100, ts("2026-10-01 08:20"), 45.758, 4.85, 18.5, 85.0, 1003.0, None),
        (100, ts("2026-10-01 08:20"), 45.758, 4.85, 18.5, 85.0, 1003.0, None),  # duplicate delivery
        (100, ts("2026-10-01 08:40"), 45.757, 4.832, 0.0, 80.0, 1005.2, None),
        (100, ts("2026-10-01 08:40"), 45.757, 4.832, 0.0, 79.0, 1005.2, None),  # a conflicting copy
        (102, ts("2026-10-01 23:55"), 45.76, 4.86, 30.0, 60.0, 500.0, "E12"),
        (102, ts("2026-10-02 00:10"), 45.75, 4.84, 42.0, 58.5, 507.5, None),
        (100, ts("2026-10-02 09:02"), 45.76, 4.86, 12.0, 79.0, 1005.2, None),
        (100, ts("2026-10-02 09:30"), 45.76, 4.86, 0.0, 75.0, 1008.2, "E03"),
        (101, ts("2026-10-02 18:00"), 45.757, 4.832, 0.0, 100.0, 250.0, None),
        (101, ts("2026-10-03 07:00"), 45.757, 4.832, 15.0, 99.0, 251.0, None),  # outside both windows
    ],
}


def bronze_contracts() -> dict[str, TableContract]:
    return {**oltp_contracts(), **file_drop_contracts()}


def create_scratch_warehouse(path: Path, rows: dict[str, list[tuple]] | None = None) -> None:
    """A DuckDB file whose `bronze` schema has one table per contract (the platform creates views there)."""
    import duckdb

    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS bronze")
        for name, contract in bronze_contracts().items():
            columns = ", ".join(
                f"{c.name} {duckdb_type(c.type_name)}{'' if c.nullable else ' NOT NULL'}" for c in contract.columns
            )
            con.execute(f"CREATE OR REPLACE TABLE bronze.{name} ({columns})")
            table_rows = (rows or {}).get(name, [])
            if table_rows:
                placeholders = ", ".join("?" for _ in contract.columns)
                con.executemany(f"INSERT INTO bronze.{name} VALUES ({placeholders})", table_rows)


def run_dbt(work_dir: Path, *args: str):
    """Invoke dbt in-process with its own target and log paths, failing the test on any error."""
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(
        [
            *args,
            "--project-dir",
            str(DBT_DIR),
            "--profiles-dir",
            str(DBT_DIR),
            "--target-path",
            str(work_dir / "target"),
            "--log-path",
            str(work_dir / "logs"),
            "--quiet",
        ]
    )
    release_duckdb()
    if not result.success:
        failures = [
            f"{r.node.unique_id}: {r.status} {r.message}"
            for r in getattr(result.result, "results", [])
            if r.status not in ("success", "pass")
        ]
        pytest.fail(f"dbt {' '.join(args)} failed: {result.exception or failures}")
    return result.result


def release_duckdb() -> None:
    """dbt-duckdb keeps its DuckDB instance open in-process after an invocation (a class attribute);
    close it so that the test, and the next invocation with other settings, can open the file."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    if DuckDBConnectionManager._ENV is not None:
        DuckDBConnectionManager._ENV.close()
    DuckDBConnectionManager.close_all_connections()


@pytest.fixture
def dbt_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """profiles.yml reads these variables; point them at tmp_path and clear any inherited target."""
    for name in list(os.environ):
        if name.startswith(("STRATA_TRINO_", "STRATA_DBT_", "STRATA_DUCKDB_")):
            monkeypatch.delenv(name)
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("STRATA_DUCKDB_PATH", str(warehouse))
    monkeypatch.setenv("STRATA_DUCKDB_EXTENSION_DIR", str(tmp_path / "duckdb_extensions"))
    return warehouse


# ---------------------------------------------------------------------------------------------------
# Trino portability checker: the compiled SQL must be Trino SQL, not merely SQL sqlglot can read.
# sqlglot's Trino reader accepts some DuckDB syntax (`::`, `* EXCLUDE`, `[..]` lists, `ilike`) and maps
# some DuckDB-only functions (isodow) to Trino ones, so it is complemented by token and AST checks and a
# function vocabulary that has been checked to exist with the same semantics on DuckDB and Trino.
# ---------------------------------------------------------------------------------------------------

PORTABLE_FUNCTIONS = {
    "count", "sum", "avg", "min", "max", "coalesce", "nullif", "cast", "extract", "date_trunc",
    "date_diff", "mod", "row_number", "abs", "floor", "ceil", "lower", "upper", "length", "round",
    "first_value",
    # greatest: only with non-null arguments (DuckDB skips nulls, Trino returns null); coalesce them first
    "greatest",
}  # fmt: skip
# Functions whose spelling differs per engine and that only an adapter-dispatched macro emits
# (macros/pii.sql pii_hash: DuckDB `sha256(text)`); the Trino spelling is what test_trino_prod_path parses.
DISPATCHED_PER_ENGINE = {"sha256"}
# keywords that may precede "(" without being a function call
STRUCTURAL_KEYWORDS = {
    "over", "in", "exists", "as", "from", "join", "using", "values", "on", "and", "or", "not", "where",
    "select", "by", "when", "then", "else", "case", "distinct", "all", "union", "with", "filter",
    "decimal", "numeric", "varchar", "char", "timestamp", "time",
}  # fmt: skip
PORTABLE_TYPES = {"BIGINT", "INT", "SMALLINT", "DOUBLE", "DECIMAL", "VARCHAR", "DATE", "TIMESTAMP", "BOOLEAN"}


def trino_portability_problems(sql: str) -> list[str]:
    """Why `sql` would not run unchanged on Trino (empty if it would)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.tokens import TokenType

    try:
        trees = [t for t in sqlglot.parse(sql, read="trino") if t is not None]
        tokens = Dialect.get_or_raise("trino").tokenize(sql)
    except sqlglot.errors.SqlglotError as error:
        return [f"not Trino SQL: {error}"]
    problems = []
    for token, following in zip(tokens, [*tokens[1:], None], strict=True):
        if token.token_type == TokenType.DCOLON:
            problems.append("`::` cast (use cast(x as type))")
        elif token.token_type in (TokenType.L_BRACE, TokenType.L_BRACKET):
            problems.append(f"`{token.text}` struct/list literal or subscript")
        elif (
            following is not None
            and following.token_type == TokenType.L_PAREN
            and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token.text)
            and token.token_type != TokenType.IDENTIFIER
            and token.text.lower() not in STRUCTURAL_KEYWORDS
            and token.text.lower() not in PORTABLE_FUNCTIONS | DISPATCHED_PER_ENGINE
        ):
            problems.append(f"function {token.text}() is not in the portable vocabulary")
    for tree in trees:
        for node in tree.walk():
            if isinstance(node, exp.ILike):
                problems.append("ILIKE (use lower(x) like ...)")
            elif isinstance(node, exp.Star) and (node.args.get("except") or node.args.get("replace")):
                problems.append("SELECT * EXCLUDE/REPLACE")
            elif isinstance(node, exp.Qualify):
                problems.append("QUALIFY (use row_number() in a subquery)")
            elif isinstance(node, exp.DataType) and node.this.name not in PORTABLE_TYPES:
                problems.append(f"type {node.sql('trino')}")
    return problems


@pytest.mark.parametrize(
    "duckdb_only",
    [
        "select x::int from t",
        "select * exclude (a) from t",
        "select * from t qualify row_number() over (partition by a order by b) = 1",
        "select [1, 2] as l",
        "select {'a': 1} as s",
        "select isodow(ts) from t",
        "select list_value(1, 2)",
        "select a // 2 from t",
        "select a from t where b ilike 'x%'",
        "select cast(a as hugeint) from t",
        "select strftime(ts, '%Y') from t",
    ],
)
def test_portability_checker_rejects_duckdb_only_sql(duckdb_only: str) -> None:
    assert trino_portability_problems(duckdb_only), duckdb_only


def test_portability_checker_accepts_portable_sql() -> None:
    sql = (
        "with h as (select a, date_trunc('hour', ts) as hs, count(*) as n from t "
        "where ts >= timestamp '2026-10-01 00:00:00' and d < date '2026-10-02' "
        "group by a, date_trunc('hour', ts)) "
        "select a, extract(hour from hs), "
        "(mod(date_diff('day', date '1900-01-01', cast(hs as date)), 7) + 1), "
        "cast(cast(n as decimal(18, 2)) * 0.01 as decimal(18, 2)), "
        "count(case when a = 'x' then 1 end) over (partition by a) from h"
    )
    assert trino_portability_problems(sql) == []


# ---------------------------------------------------------------------------------------------------


def test_parses_for_the_prod_trino_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STRATA_"):
            monkeypatch.delenv(name)
    manifest = run_dbt(tmp_path, "parse", "--target", "prod")
    assert manifest.metadata.adapter_type == "trino"

    models = {n.name: n for n in manifest.nodes.values() if n.resource_type == "model"}
    assert set(models) == set(MODEL_SCHEMAS)
    assert {name: n.schema for name, n in models.items()} == MODEL_SCHEMAS
    assert {name for name, n in models.items() if "daily" in n.tags} == DAILY_MODELS | DAILY_VIEWS
    assert {models[name].config.materialized for name in DAILY_VIEWS} == {"view"}
    for name in DAILY_MODELS:
        config = models[name].config
        assert config.materialized == "incremental" and config.incremental_strategy == "append", name
        assert "delete_window" in config.pre_hook[0].sql, name
    # The final bookings table is written only from the valid rows, by merge on its key.
    final = models["bookings"].config
    assert (final.materialized, final.incremental_strategy, final.unique_key) == ("incremental", "merge", "booking_id")
    assert models["bookings"].depends_on.nodes == ["model.strata.bookings_valid"]
    for name, node in models.items():
        assert node.description, f"{name} is not documented"
        assert node.columns and all(c.description for c in node.columns.values()), f"{name} has undocumented columns"

    sources = {s.name: s for s in manifest.sources.values()}
    assert set(sources) == BRONZE_TABLES
    contracts = bronze_contracts()
    for name, source in sources.items():
        assert source.schema == "bronze" and source.source_name == "bronze"
        assert source.meta["dagster"]["asset_key"] == ["bronze", name]
        # the API-fed weather table's contract is its Iceberg schema (assets/bronze/weather.py)
        contract = contracts[name].column_names if name in contracts else WEATHER_SCHEMA.names
        assert list(source.columns) == contract, f"source {name} differs from its contract"

    tests = [n for n in manifest.nodes.values() if n.resource_type == "test"]
    generic = Counter(t.test_metadata.name for t in tests if getattr(t, "test_metadata", None))
    assert {
        "unique",
        "not_null",
        "relationships",
        "accepted_values",
        "unique_combination",
        "in_range",
    } <= set(generic)
    singular = {t.name for t in tests if not getattr(t, "test_metadata", None)}
    assert singular == {"assert_finished_trips_end_after_start", "assert_kpi_daily_status_counts_add_up"}
    tested = {model.split(".")[-1] for t in tests for model in t.depends_on.nodes if model.startswith("model.")}
    assert tested == set(MODEL_SCHEMAS), f"untested models: {set(MODEL_SCHEMAS) - tested}"
    relationships = {
        (t.attached_node.split(".")[-1], t.column_name, t.test_metadata.kwargs["to"])
        for t in tests
        if getattr(t, "test_metadata", None) and t.test_metadata.name == "relationships"
    }
    assert ("fct_bookings", "customer_id", "ref('dim_customers')") in relationships


def test_compiled_sql_is_trino_portable(dbt_env: Path, tmp_path: Path) -> None:
    create_scratch_warehouse(dbt_env)
    results = run_dbt(tmp_path, "compile", "--target", "local")
    compiled = {
        r.node.unique_id: r.node.compiled_code
        for r in results
        if r.node.resource_type in ("model", "test") and r.node.package_name == "strata"
    }
    assert sum(uid.startswith("model.") for uid in compiled) == len(MODEL_SCHEMAS)
    problems = {uid: p for uid, sql in compiled.items() if (p := trino_portability_problems(sql))}
    assert problems == {}


def table_rows(warehouse: Path, sql: str) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def row_counts(warehouse: Path) -> dict[str, int]:
    return {
        f"{schema}.{model}": table_rows(warehouse, f"select count(*) from {schema}.{model}")[0][0]
        for model, schema in MODEL_SCHEMAS.items()
    }


def expected_revenue_by_day() -> dict[date, int]:
    revenue: dict[date, int] = defaultdict(int)
    for _pid, _bid, amount_cents, _cur, status, paid_at, _c, _u in SCRATCH_ROWS["payments"]:
        if status == "captured":
            revenue[paid_at.date()] += amount_cents
    return dict(revenue)


def expected_km_by_vehicle_day() -> dict[tuple[int, str], float]:
    """max - min odometer of each vehicle's readings per day, within the two built days."""
    odometers: dict[tuple[int, str], list[float]] = defaultdict(list)
    for vehicle_id, reading_ts, *_values, odometer_km, _fault in SCRATCH_ROWS["telemetry"]:
        if reading_ts < datetime(2026, 10, 3):
            odometers[(vehicle_id, str(reading_ts.date()))].append(odometer_km)
    return {key: max(values) - min(values) for key, values in odometers.items()}


def test_daily_windows_are_idempotent_and_match_the_source(dbt_env: Path, tmp_path: Path) -> None:
    create_scratch_warehouse(dbt_env, SCRATCH_ROWS)
    day1, day2 = date(2026, 10, 1), date(2026, 10, 2)
    vars_day1, vars_day2 = json.dumps(DAY1), json.dumps(DAY2)

    run_dbt(tmp_path, "build", "--target", "local", "--vars", vars_day1)
    first = row_counts(dbt_env)
    run_dbt(tmp_path, "build", "--target", "local", "--vars", vars_day1)
    assert row_counts(dbt_env) == first
    # only day 1 is in the daily tables; the duplicated reading is gone
    assert table_rows(dbt_env, "select distinct booking_date from gold.fct_bookings") == [(day1,)]
    assert first["silver.telemetry_clean"] == 4
    # the conflicting copy loses (lower battery) and is quarantined; the identical copy loses nothing
    assert table_rows(dbt_env, "select vehicle_id, ts, rule, offending_value from silver.telemetry_quarantine") == [
        (
            100,
            datetime(2026, 10, 1, 8, 40),
            "one_reading_per_vehicle_and_time",
            "lat=45.757 lon=4.832 speed_kmh=0.0 battery_pct=79.0 odometer_km=1005.2 fault_code=null",
        )
    ]

    # the re-run emptied the window first, with a DELETE that Trino runs as well
    deletes = {
        line.strip()
        for line in (tmp_path / "logs" / "dbt.log").read_text().splitlines()
        if line.strip().startswith("delete from")
    }
    assert {re.search(r'"(\w+)" where', d).group(1) for d in deletes} == DAILY_MODELS
    assert all(trino_portability_problems(d) == [] for d in deletes)

    run_dbt(tmp_path, "build", "--target", "local", "--vars", vars_day2)
    both_days = row_counts(dbt_env)
    run_dbt(tmp_path, "build", "--target", "local", "--vars", vars_day1)
    assert row_counts(dbt_env) == both_days

    revenue = dict(table_rows(dbt_env, "select kpi_date, revenue_cents from gold.kpi_daily"))
    assert revenue == expected_revenue_by_day()  # by paid_at: booking 8 (day 1) is revenue of day 2
    bookings = {
        (d, status): n
        for d, status, n in table_rows(
            dbt_env, "select booking_date, status, count(*) from gold.fct_bookings group by 1, 2"
        )
    }
    assert bookings == Counter((b[6].date(), b[5]) for b in SCRATCH_ROWS["bookings"])
    km = {
        (vehicle_id, str(day)): km_driven
        for vehicle_id, day, km_driven in table_rows(
            dbt_env, "select vehicle_id, health_date, km_driven from gold.fleet_health_daily"
        )
    }
    assert km == pytest.approx(expected_km_by_vehicle_day())
    assert table_rows(dbt_env, "select revenue_eur from gold.kpi_daily where kpi_date = date '2026-10-02'") == [
        (pytest.approx(36.00),)
    ]

    # A changed source replaces the window's rows: booking 4 is cancelled (a change stamps updated_at,
    # which is what the merge into silver.bookings picks up), day 1 is re-run.
    import duckdb

    with duckdb.connect(str(dbt_env)) as con:
        con.execute(
            "update bronze.bookings set status = 'cancelled', updated_at = timestamp '2026-10-05 00:00:00' "
            "where booking_id = 4"
        )
    run_dbt(tmp_path, "build", "--target", "local", "--vars", vars_day1)
    assert row_counts(dbt_env) == both_days
    assert table_rows(
        dbt_env,
        f"select bookings_reserved, bookings_cancelled from gold.kpi_daily where kpi_date = date '{day1}'",
    ) == [(0, 2)]
    assert table_rows(dbt_env, f"select bookings_total from gold.kpi_daily where kpi_date = date '{day2}'") == [(3,)]


def dbt_log_since(log: Path, offset: int) -> str:
    return log.read_text()[offset:]


def test_a_new_window_keeps_the_partial_parse_and_filters_its_days(
    dbt_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform passes the window as STRATA_WINDOW_START/END (assets/transform/dbt_models.py), so a
    second run with another window re-parses only the files that read the window, not the project (a
    changed `--vars` made dbt discard its whole partial parse), and still builds exactly its days."""
    import dagster as dg

    from assets.transform.dbt_models import window_environment

    create_scratch_warehouse(dbt_env, SCRATCH_ROWS)
    day1, day2 = date(2026, 10, 1), date(2026, 10, 2)
    log = tmp_path / "logs" / "dbt.log"

    def build_window(day: date) -> str:
        """`dbt build` with the platform's window environment for `day`; dbt's log lines of this call."""
        window = dg.TimeWindow(datetime(day.year, day.month, day.day), datetime(day.year, day.month, day.day + 1))
        for name, value in window_environment(window).items():
            monkeypatch.setenv(name, value)
        offset = len(log.read_text()) if log.exists() else 0
        run_dbt(tmp_path, "build", "--target", "local")
        return dbt_log_since(log, offset)

    build_window(day1)
    assert table_rows(dbt_env, "select distinct booking_date from gold.fct_bookings") == [(day1,)]
    day1_rows = table_rows(dbt_env, "select * from gold.fct_bookings order by all")

    second = build_window(day2)
    assert "Unable to do partial parsing" not in second
    assert "Partial parsing enabled" in second
    reparsed = set(re.findall(r"Partial parsing: updated file: strata://(\S+)", second))
    # only the yml files whose tests' `where` reads the window; not the models, which read it at run time
    assert reparsed == {
        "models/staging/_staging__models.yml",
        "models/intermediate/_intermediate__models.yml",
        "models/marts/_marts__models.yml",
    }
    # day 2 was added, day 1 left as it was
    assert table_rows(dbt_env, "select distinct booking_date from gold.fct_bookings order by 1") == [(day1,), (day2,)]
    assert (
        table_rows(dbt_env, "select * from gold.fct_bookings where booking_date = date '2026-10-01' order by all")
        == day1_rows
    )
    assert {d for (d,) in table_rows(dbt_env, "select distinct reading_date from silver.telemetry_clean")} == {
        day1,
        day2,
    }

    # By hand, `--vars` still names the window and wins over the environment (a full parse, as dbt does).
    monkeypatch.setenv("STRATA_WINDOW_START", "2026-10-05")
    monkeypatch.setenv("STRATA_WINDOW_END", "2026-10-06")
    run_dbt(tmp_path, "build", "--target", "local", "--vars", json.dumps(DAY1))
    assert table_rows(dbt_env, "select distinct booking_date from gold.fct_bookings order by 1") == [(day1,), (day2,)]
    assert (
        table_rows(dbt_env, "select * from gold.fct_bookings where booking_date = date '2026-10-01' order by all")
        == day1_rows
    )


def test_each_multi_asset_keeps_one_locked_target_path(tmp_path: Path) -> None:
    """Runs of one multi-asset reuse one target path (its partial parse); while a run holds it, another
    run of the same multi-asset gets None (dagster-dbt's one-off path), and another multi-asset its own."""
    import logging

    from dagster_dbt import DbtCliResource

    from assets.transform.dbt_models import stable_target_path

    project = tmp_path / "project"
    project.mkdir()
    project.joinpath("dbt_project.yml").write_text("name: scratch\nprofile: scratch\n")
    dbt = DbtCliResource(project_dir=str(project), target="local")
    log = logging.getLogger("test")
    with stable_target_path(dbt, "dbt_daily_models", log) as first:
        assert first == project / "target" / "strata" / "local-dbt_daily_models"
        first.joinpath("run_results.json").write_text("{}")
        with stable_target_path(dbt, "dbt_daily_models", log) as concurrent:
            assert concurrent is None
        with stable_target_path(dbt, "dbt_models", log) as other:
            assert other == project / "target" / "strata" / "local-dbt_models"
    with stable_target_path(dbt, "dbt_daily_models", log) as again:
        assert again == first
        assert not again.joinpath("run_results.json").exists()  # no earlier run's results read as this one's
