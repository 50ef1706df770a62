"""Row-level quarantine in Bronze: bad rows land in `audit.bronze_quarantine`, the good rows of the same
load are published, and structural problems still refuse the whole load."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from assets.bronze.conform import ContractViolation, conform_rows, conform_to_contract
from assets.bronze.contracts import ColumnContract, TableContract, oltp_contracts
from assets.bronze.oltp import stored_watermark
from assets.bronze.quarantine import QUARANTINE_TABLE, quarantined_rows
from assets.drops.ledger import LEDGER_TABLE
from assets.drops.protocol import ERROR_NAME, drop_prefix, manifest_partition
from assets.drops.quarantine import QUARANTINE_ROOT
from assets.drops.verification import verify_drop
from resources.landing import LandingZone
from tests.test_bronze_oltp import CREATE, catalog_at, execute
from tests.test_bronze_oltp import materialize as materialize_stations
from tests.test_bronze_telemetry import CONTRACT as TELEMETRY
from tests.test_bronze_telemetry import FIRST_HOUR, hour_rows, land, run_hours

STATIONS = oltp_contracts()["stations"]
# The producer's table without the constraints, so SQLite lets it break the contract.
LOOSE_CREATE = CREATE.replace(" PRIMARY KEY", "").replace(" NOT NULL", "").format(ts="TEXT")


def quarantine_of(root: Path, **where) -> list[dict]:
    """Quarantine records as plain dicts, in a stable order."""
    rows = quarantined_rows(catalog_at(root), **where).to_pylist()
    return sorted(rows, key=lambda r: (r["source"], r["row_key"] or "", r["rule"]))


def metadata_of(result: dg.ExecuteInProcessResult) -> dict:
    return {k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()}


def metadata_by_partition(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Each partition's materialization metadata (values), checking that there is one event per partition."""
    events = [e.materialization for e in result.get_asset_materialization_events()]
    by_partition = {m.partition: {k: v.value for k, v in m.metadata.items()} for m in events}
    assert len(by_partition) == len(events)
    return by_partition


# --- conformance ------------------------------------------------------------------------------------


def station_rows(**columns: list) -> pa.Table:
    """Stations rows as SQLite delivers them (timestamps as text); `columns` override the defaults."""
    n = len(next(iter(columns.values())))
    base = {
        "station_id": pa.array(range(1, n + 1), pa.int64()),
        "station_name": ["s"] * n,
        "city": ["Lyon"] * n,
        "lat": [45.7] * n,
        "lon": [4.8] * n,
        "capacity": pa.array([20] * n, pa.int64()),
        "created_at": ["2026-09-01 00:00:00"] * n,
        "updated_at": ["2026-10-01 09:00:00"] * n,
    }
    return pa.table({**base, **columns})


def test_row_level_problems_are_set_apart_one_record_per_row_and_rule():
    table = station_rows(
        station_id=pa.array([1, None, 3, 4, 5], pa.int64()),
        city=["Lyon", "Lyon", None, "Lyon", None],
        updated_at=["2026-10-01 09:00:00", "2026-10-01T09:00:00.123456", "2026-10-01", "yesterday", "2026-10-01 9h"],
    )
    conformed = conform_rows(table, STATIONS, "src")

    assert conformed.rows.schema == STATIONS.arrow_schema()
    assert conformed.rows.column("station_id").to_pylist() == [1]
    assert conformed.rejects.num_rows == 4
    assert conformed.rejects.raw_rows.column("station_id").to_pylist() == [None, 3, 4, 5]
    assert conformed.rejects.violations.to_pylist() == [
        {"row": 0, "rule": "station_id_not_null", "column_name": "station_id", "offending_value": None},
        {"row": 1, "rule": "city_not_null", "column_name": "city", "offending_value": None},
        {"row": 2, "rule": "updated_at_parseable_as_timestamp", "column_name": "updated_at",
         "offending_value": "yesterday"},
        {"row": 3, "rule": "city_not_null", "column_name": "city", "offending_value": None},
        {"row": 3, "rule": "updated_at_parseable_as_timestamp", "column_name": "updated_at",
         "offending_value": "2026-10-01 9h"},
    ]  # fmt: skip
    # The rejected rows in the contract's types: readable values kept, unreadable ones null.
    assert [str(v) if v else None for v in conformed.rejects.typed_rows.column("updated_at").to_pylist()] == [
        "2026-10-01 09:00:00.123456",
        "2026-10-01 00:00:00",
        None,
        None,
    ]
    assert conformed.rejects.counts() == {
        ("station_id", "station_id_not_null"): 1,
        ("city", "city_not_null"): 2,
        ("updated_at", "updated_at_parseable_as_timestamp"): 2,
    }
    # The whole-table mode still refuses the same data, naming the first problem.
    with pytest.raises(ContractViolation, match=r"src: column 'station_id' has 1 null value\(s\) but is 'not null'"):
        conform_to_contract(table, STATIONS, "src")


def test_exactly_what_the_cast_accepts_is_accepted_and_bad_values_are_found_anywhere():
    good = ["2026-10-01 09:00:00", "2026-10-01T09:00:00.123456", "2026-10-01", "2026-10-01 09:00"]
    bad = {0: "", 4321: "N/A", 4322: "N/A", 7000: "2026-10-01T09:00:00Z", 9999: "2026-13-01 00:00:00"}
    values = [good[i % len(good)] for i in range(10_000)]
    for position, value in bad.items():
        values[position] = value
    # Several chunks, as a parquet reader or a database cursor delivers them.
    column = pa.chunked_array([pa.array(values[:3000]), pa.array(values[3000:])])
    contract = TableContract("readings", (ColumnContract("ts", "timestamp", nullable=True),))
    conformed = conform_rows(pa.table({"ts": column}), contract, "src")

    violations = conformed.rejects.violations.to_pylist()
    assert [conformed.rejects.raw_rows.column("ts")[v["row"]].as_py() for v in violations] == list(bad.values())
    assert {v["rule"] for v in violations} == {"ts_parseable_as_timestamp"}
    assert [v["offending_value"] for v in violations] == list(bad.values())
    assert conformed.rows.num_rows == 10_000 - len(bad)
    kept = [v for i, v in enumerate(values) if i not in bad]
    assert conformed.rows.column("ts").to_pylist() == pa.array(kept).cast(pa.timestamp("us")).to_pylist()

    dates = TableContract("days", (ColumnContract("d", "date", nullable=False),))
    conformed = conform_rows(pa.table({"d": ["2026-10-01", "2026-10-01 09:00:00", None]}), dates, "src")
    assert conformed.rejects.violations.select(["rule", "offending_value"]).to_pylist() == [
        {"rule": "d_parseable_as_date", "offending_value": "2026-10-01 09:00:00"},
        {"rule": "d_not_null", "offending_value": None},
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lat": ["45.7"]}, "column 'lat' has type string, contract says float64"),
        ({"capacity": [20.0]}, "column 'capacity' has type double, contract says int64"),
    ],
)
def test_structural_problems_still_refuse_the_whole_table(change, message):
    with pytest.raises(ContractViolation, match=message):
        conform_rows(station_rows(**change), STATIONS, "src")
    with pytest.raises(ContractViolation, match=r"missing column\(s\) \['city'\]"):
        conform_rows(station_rows(city=["Lyon"]).drop_columns(["city"]), STATIONS, "src")
    with pytest.raises(ContractViolation, match=r"unexpected column\(s\) \['driver'\]"):
        conform_rows(station_rows(city=["Lyon"]).append_column("driver", pa.array(["x"])), STATIONS, "src", exact=True)


# --- OLTP ---------------------------------------------------------------------------------------------


def insert(station_id: object, city: object, created: str, updated: str) -> str:
    def sql(value: object) -> str:
        return "NULL" if value is None else f"'{value}'" if isinstance(value, str) else str(value)

    return (
        f"INSERT INTO stations VALUES ({sql(station_id)}, 'Station {station_id}', {sql(city)}, 45.7, 4.8, 20, "
        f"{sql(created)}, {sql(updated)})"
    )


def bronze_station_ids(root: Path) -> list[int]:
    table = catalog_at(root).load().load_table("bronze.stations").scan().to_arrow()
    return sorted(table.column("station_id").to_pylist())


def test_oltp_rows_breaking_the_contract_are_quarantined_and_the_others_upserted(tmp_path):
    url = f"sqlite:///{tmp_path / 'oltp.sqlite'}"
    created = "2026-09-01 00:00:00.000000"
    execute(
        url,
        LOOSE_CREATE,
        insert(1, "Lyon", created, "2026-10-01 08:00:00.000000"),
        insert(None, "Lyon", created, "2026-10-01 09:00:00.000000"),  # null key
        insert(3, None, created, "2026-10-03 00:00:00.000000"),  # null required column, newest change
        insert(4, "Lyon", created, "2026-10-01 25:00:00.000000"),  # unparseable watermark (hour 25)
        insert(5, None, "not a date", "2026-10-01 10:00:00.000000"),  # two rules broken by one row
        insert(6, "Villeurbanne", created, "2026-10-02 00:00:00.000000"),
    )
    result = materialize_stations(url, tmp_path)

    meta = metadata_of(result)
    assert meta["strata/rows_in"] == 6
    assert meta["strata/rows_out"] == 2
    assert meta["strata/rows_quarantined"] == 4
    assert meta["strata/quarantine_table"] == QUARANTINE_TABLE
    # The quarantined row 3 is the newest change: the watermark moves past it (it is recorded, not lost).
    assert meta["strata/watermark"] == "2026-10-03 00:00:00"
    assert bronze_station_ids(tmp_path) == [1, 6]
    assert stored_watermark(catalog_at(tmp_path).load().load_table("bronze.stations")) == "2026-10-03 00:00:00"

    records = quarantine_of(tmp_path, dataset="stations")
    assert [(r["row_key"], r["rule"], r["column_name"], r["offending_value"]) for r in records] == [
        (None, "station_id_not_null", "station_id", None),
        ("3", "city_not_null", "city", None),
        ("4", "updated_at_parseable_as_timestamp", "updated_at", "2026-10-01 25:00:00.000000"),
        ("5", "city_not_null", "city", None),
        ("5", "created_at_parseable_as_timestamp", "created_at", "not a date"),
    ]
    assert {(r["dataset"], r["source"], r["partition_key"], r["dagster_run_id"]) for r in records} == {
        ("stations", "source table stations", "", result.run_id)
    }
    assert json.loads(records[3]["raw_row"]) == {
        "station_id": 5,
        "station_name": "Station 5",
        "city": None,
        "lat": 45.7,
        "lon": 4.8,
        "capacity": 20,
        "created_at": "not a date",
        "updated_at": "2026-10-01 10:00:00.000000",
    }
    assert all(r["quarantined_at"] is not None for r in records)

    # Rows at the watermark are read again (`>=`): row 3 is set aside again by the next run but recorded
    # only once, and nothing is published twice. Rows below the watermark that sit in the quarantine
    # (the null key, rows 4 and 5) are not read again. Once the producer fixes row 3, it has a new
    # updated_at and is upserted.
    again = materialize_stations(url, tmp_path)
    assert (metadata_of(again)["strata/rows_in"], metadata_of(again)["strata/rows_quarantined"]) == (1, 1)
    assert metadata_of(again)["strata/already_quarantined"] == 1
    assert len(quarantine_of(tmp_path, run_id=again.run_id)) == 0
    assert len(quarantine_of(tmp_path, dataset="stations")) == 5
    execute(url, "UPDATE stations SET city = 'Lyon', updated_at = '2026-10-04 00:00:00.000000' WHERE station_id = 3")
    fixed = metadata_of(materialize_stations(url, tmp_path))
    assert (fixed["strata/rows_in"], fixed["strata/rows_out"], fixed["strata/rows_quarantined"]) == (1, 1, 0)
    assert "strata/quarantine_table" not in fixed
    assert bronze_station_ids(tmp_path) == [1, 3, 6]


def test_oltp_quarantine_warning_names_table_columns_rules_and_counts(tmp_path):
    url = f"sqlite:///{tmp_path / 'oltp.sqlite'}"
    created, updated = "2026-09-01 00:00:00.000000", "2026-10-01 08:00:00.000000"
    execute(url, LOOSE_CREATE, insert(1, None, created, updated), insert(2, None, created, updated))
    execute(url, insert(3, "Lyon", "yesterday", updated))
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_stations(url, tmp_path, instance)
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert warnings == [
        "bronze.stations: 3 row(s) broke the contract and were written to audit.bronze_quarantine instead: "
        "city_not_null (column city): 2 row(s); created_at_parseable_as_timestamp (column created_at): 1 row(s)"
    ]


def test_an_extraction_where_every_row_is_quarantined_still_moves_the_watermark(tmp_path):
    url = f"sqlite:///{tmp_path / 'oltp.sqlite'}"
    execute(url, LOOSE_CREATE, insert(1, None, "2026-09-01 00:00:00.000000", "2026-10-01 08:00:00.000000"))
    meta = metadata_of(materialize_stations(url, tmp_path))
    assert (meta["strata/rows_in"], meta["strata/rows_out"], meta["strata/rows_quarantined"]) == (1, 0, 1)
    assert meta["dagster/row_count"] == 0
    table = catalog_at(tmp_path).load().load_table("bronze.stations")
    assert stored_watermark(table) == "2026-10-01 08:00:00"
    assert table.scan().to_arrow().num_rows == 0

    execute(url, insert(2, "Lyon", "2026-09-01 00:00:00.000000", "2026-10-02 08:00:00.000000"))
    meta = metadata_of(materialize_stations(url, tmp_path))
    assert (meta["strata/rows_in"], meta["strata/rows_out"], meta["strata/rows_inserted"]) == (2, 1, 1)
    assert bronze_station_ids(tmp_path) == [2]


def test_a_structural_violation_in_an_oltp_table_still_fails_the_whole_load(tmp_path):
    url = f"sqlite:///{tmp_path / 'oltp.sqlite'}"
    execute(
        url,
        # NUMERIC affinity passes the declared-schema check (tests/test_schema_drift.py); the values do not.
        LOOSE_CREATE.replace("lat DOUBLE PRECISION", "lat NUMERIC"),
        insert(1, "Lyon", "2026-09-01 00:00:00.000000", "2026-10-01 08:00:00.000000"),
        "UPDATE stations SET lat = 'north'",
    )
    with pytest.raises(dg.Failure, match=r"table stations: column 'lat' has type string, contract says float64"):
        materialize_stations(url, tmp_path)
    assert catalog_at(tmp_path).table_or_none(QUARANTINE_TABLE) is None
    assert catalog_at(tmp_path).load().load_table("bronze.stations").current_snapshot() is None


# --- telemetry drops ----------------------------------------------------------------------------------


def telemetry_with_bad_rows(hour: datetime) -> pa.Table:
    """12 rows of the hour with `ts` as text (a producer's choice the contract allows), one of them
    unparseable, and one row without a vehicle id."""
    rows = hour_rows(hour)
    ts = rows.column("ts").cast(pa.string()).to_pylist()
    ts[4] = "2026-10-01 01:xx:00"
    ids = rows.column("vehicle_id").to_pylist()
    ids[7] = None
    schema = pa.schema([pa.field("vehicle_id", pa.int64()), pa.field("ts", pa.string()), *list(rows.schema)[2:]])
    return pa.Table.from_arrays([pa.array(ids, pa.int64()), pa.array(ts), *rows.columns[2:]], schema=schema)


def test_a_drop_with_bad_rows_verifies_and_sets_them_apart(tmp_path):
    hour = FIRST_HOUR + timedelta(hours=1)
    zone = LandingZone(root=str(tmp_path / "landing"))
    land(tmp_path / "landing", hour, telemetry_with_bad_rows(hour))
    verified = verify_drop(zone, drop_prefix("telemetry", hour), TELEMETRY, manifest_partition(hour))
    assert (verified.rows_in, verified.rows.num_rows, verified.rows_quarantined) == (12, 10, 2)
    assert list(verified.rejects) == ["part-00000.parquet"]
    assert verified.rows.schema == TELEMETRY.arrow_schema()


def test_a_drop_with_bad_rows_loads_the_others_and_quarantines_those(tmp_path):
    hours = [FIRST_HOUR, FIRST_HOUR + timedelta(hours=1)]
    land(tmp_path / "landing", hours[0], hour_rows(hours[0]))
    land(tmp_path / "landing", hours[1], telemetry_with_bad_rows(hours[1]))
    result = run_hours(tmp_path, hours[0], hours[1])

    # One materialization per hour, each with that hour's own counts.
    by_hour = metadata_by_partition(result)
    clean, dirty = by_hour["2026-10-01-00:00"], by_hour["2026-10-01-01:00"]
    assert (clean["strata/rows_in"], clean["strata/rows_out"], clean["strata/rows_quarantined"]) == (12, 12, 0)
    assert (dirty["strata/rows_in"], dirty["strata/rows_out"], dirty["strata/rows_quarantined"]) == (12, 10, 2)
    assert (clean["dagster/partition_row_count"], dirty["dagster/partition_row_count"]) == (12, 10)
    assert clean["dagster/row_count"] == dirty["dagster/row_count"] == 22  # the whole table
    assert dirty["strata/quarantine_table"] == QUARANTINE_TABLE
    assert "strata/quarantine_table" not in clean

    loaded = catalog_at(tmp_path).load().load_table("bronze.telemetry").scan().to_arrow()
    per_hour = {h: 0 for h in hours}
    for ts in loaded.column("ts").to_pylist():
        per_hour[ts.replace(minute=0, second=0, microsecond=0)] += 1
    assert per_hour == {hours[0]: 12, hours[1]: 10}
    assert None not in loaded.column("vehicle_id").to_pylist()

    source = "telemetry/dt=2026-10-01/hour=01/part-00000.parquet"
    records = quarantine_of(tmp_path, dataset="telemetry")
    assert [(r["row_key"], r["rule"], r["column_name"], r["offending_value"]) for r in records] == [
        (None, "vehicle_id_not_null", "vehicle_id", None),
        ("2|2026-10-01 01:xx:00", "ts_parseable_as_timestamp", "ts", "2026-10-01 01:xx:00"),
    ]
    assert {(r["source"], r["partition_key"], r["dagster_run_id"]) for r in records} == {
        (source, "2026-10-01-01:00", result.run_id)
    }
    assert json.loads(records[0]["raw_row"]) == {
        "vehicle_id": None,
        "ts": "2026-10-01 01:30:02.000000",
        "lat": 45.0,
        "lon": 4.0,
        "speed_kmh": 7.0,
        "battery_pct": 80.0,
        "odometer_km": 107.0,
        "fault_code": None,
    }

    # The drop itself was loaded, not quarantined: it stays in place and the ledger counts loaded rows.
    landing = tmp_path / "landing"
    assert not (landing / QUARANTINE_ROOT).exists()
    assert not (landing / drop_prefix("telemetry", hours[1]) / ERROR_NAME).exists()
    ledger = catalog_at(tmp_path).load().load_table(LEDGER_TABLE).scan().to_arrow().to_pylist()
    assert sorted((r["partition_key"], r["rows"]) for r in ledger) == [
        ("2026-10-01-00:00", 12),
        ("2026-10-01-01:00", 10),
    ]

    # Re-running the range replaces the hours (no duplicates) and records the same rejects under the new run.
    rerun = run_hours(tmp_path, hours[0], hours[1])
    assert catalog_at(tmp_path).load().load_table("bronze.telemetry").scan().to_arrow().num_rows == 22
    assert len(quarantine_of(tmp_path, run_id=rerun.run_id)) == 2
    assert len(quarantine_of(tmp_path, dataset="telemetry")) == 4


def test_a_structural_violation_in_a_drop_still_quarantines_the_whole_drop(tmp_path):
    hours = [FIRST_HOUR, FIRST_HOUR + timedelta(hours=1)]
    land(tmp_path / "landing", hours[0], hour_rows(hours[0]))
    broken = telemetry_with_bad_rows(hours[1]).drop_columns(["battery_pct"])
    land(tmp_path / "landing", hours[1], broken)

    result = run_hours(tmp_path, hours[0], hours[1], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "contract check failed" in failure.step_failure_data.error.cause.message
    assert "missing column(s) ['battery_pct']" in failure.step_failure_data.error.cause.message
    catalog = catalog_at(tmp_path)
    assert catalog.table_or_none(QUARANTINE_TABLE) is None  # no row-level records for a refused drop
    assert catalog.load().load_table("bronze.telemetry").current_snapshot() is None
    assert list((tmp_path / "landing" / QUARANTINE_ROOT).rglob(ERROR_NAME))
