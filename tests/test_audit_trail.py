"""The audit trail on real components: a Bronze OLTP load that succeeds and one that fails on a real
Dagster instance, the audit sensor writing Iceberg `audit.run_log`, and the `audit` CLI exporting it.

The failed run's source echoes its connection string and session token into its error (some drivers
do): the secrets are in the event log, and must be nowhere in the audit record, table or export.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from dagster._utils.error import SerializableErrorInfo

from assets.bronze.conform import conform_to_contract
from assets.bronze.contracts import oltp_contracts
from assets.bronze.oltp import build_oltp_asset, extraction_query, latest_version_per_key
from audit.cli import iceberg_records, main, settings_catalog
from audit.errors import MAX_ERROR_CHARS, error_summary
from audit.metadata import code_identity, table_checksum
from audit.query import AuditFilter, partition_matches
from audit.record import AuditRecord, _AssetValues, build_audit_record, classify_trigger
from audit.run_log import RUN_LOG_SCHEMA, RUN_LOG_TABLE, rebuild_run_log, records_from_arrow, records_to_arrow
from resources.iceberg import IcebergCatalog
from resources.ingestion_guard import IngestionGuard
from resources.redaction import scrub
from resources.settings import secret_values
from resources.source_db import SourceDatabase
from sensors.audit_sensor import AuditCursor, build_audit_sensor, process_finished_runs
from tests.test_bronze_oltp import CREATE, execute, row

STATIONS = oltp_contracts()["stations"]
STATIONS_KEY = dg.AssetKey(["bronze", "stations"])
IMAGE = "registry.example.com/strata/bronze:1.4.2@sha256:" + "ab" * 32
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"
PLANTED_PASSWORD = "pl4nted-Pa55word-7f3a"
PLANTED_TOKEN = "hvs.planted-session-token-9c1e"
SECRETS = (PLANTED_PASSWORD, PLANTED_TOKEN)


class DsnEchoingSource(SourceDatabase):
    """A source whose driver puts its full DSN and session token into error messages."""

    dsn: str
    session_token: str

    def read_arrow(self, query: str) -> pa.Table:
        try:
            return super().read_arrow(query)
        except Exception as error:
            raise RuntimeError(f"read failed on {self.dsn} (session {self.session_token}): {error}") from error

    def table_columns(self, table: str) -> dict[str, pa.DataType | None] | None:
        self.read_arrow(f"SELECT * FROM {table} LIMIT 0")  # this driver inspects a table by querying it
        return super().table_columns(table)


@dg.asset_check(asset=STATIONS_KEY, description="Bronze holds every source station.")
def stations_loaded(iceberg: IcebergCatalog) -> dg.AssetCheckResult:
    rows = iceberg.load().load_table("bronze.stations").scan().to_arrow().num_rows
    return dg.AssetCheckResult(passed=rows == 3, metadata={"rows": rows})


@dg.asset_check(asset=STATIONS_KEY, description="Fails on purpose: every demo station has capacity 20.")
def capacity_at_most_10() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)


@dataclass
class Trail:
    instance: dg.DagsterInstance
    catalog: IcebergCatalog  # a fresh, empty catalog per test (the CLI finds it through the environment)
    source_url: str
    stations_snapshot: int
    ok_run: str
    failed_run: str

    def built(self) -> list[AuditRecord]:
        return sorted(
            (build_audit_record(self.instance, r) for r in (self.ok_run, self.failed_run)), key=lambda r: r.run_id
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    """One successful and one failed Bronze load on a real instance in $DAGSTER_HOME (what the CLI opens).

    Module-scoped because the two runs cost seconds; tests that add runs use an instance of their own.
    """
    tmp = tmp_path_factory.mktemp("audit")
    home = tmp / "dagster_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as env:
        for name in ("STRATA_ENV", "STRATA_SOURCE_URL", "STRATA_CATALOG_URI", "STRATA_ICEBERG_WAREHOUSE"):
            env.delenv(name, raising=False)
        env.setenv("STRATA_ROOT", str(tmp / "strata"))
        env.setenv("DAGSTER_HOME", str(home))
        env.setenv("STRATA_IMAGE", IMAGE)
        env.setenv("STRATA_GIT_SHA", GIT_SHA)
        # How the session token reaches a real resource: an environment variable with a secret-looking name.
        env.setenv("STRATA_SOURCE_SESSION_TOKEN", PLANTED_TOKEN)
        code_identity.cache_clear()

        source = f"sqlite:///{tmp / 'oltp.sqlite'}"
        execute(
            source,
            CREATE.format(ts="TEXT"),
            row(1, "Bellecour", "2026-10-01 08:00:00.000000"),
            row(2, "Part-Dieu", "2026-10-01 09:00:00.000000"),
            row(3, "Perrache", "2026-10-01 09:30:00.000000"),
        )
        no_stations = f"sqlite:///{tmp / 'no_stations.sqlite'}"
        execute(no_stations, "CREATE TABLE unrelated (x INTEGER)")
        bronze = settings_catalog()
        guard = IngestionGuard(data_path=str(tmp), min_free_disk_gb=0)
        asset = build_oltp_asset(STATIONS)
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            ok = dg.materialize(
                [asset, stations_loaded, capacity_at_most_10],
                resources={"source_db": SourceDatabase(url=source), "iceberg": bronze, "guard": guard},
                instance=instance,
                tags={"strata/trigger": "backfill-cli"},
            )
            failing_source = DsnEchoingSource(
                url=no_stations,
                dsn=f"postgresql://strata:{PLANTED_PASSWORD}@db.internal:5432/oltp",
                session_token=PLANTED_TOKEN,
            )
            failed = dg.materialize(
                [asset],
                resources={"source_db": failing_source, "iceberg": bronze, "guard": guard},
                instance=instance,
                tags={"dagster/schedule_name": "oltp_hourly"},
                raise_on_error=False,
            )
            assert ok.success and not failed.success
            snapshot = bronze.load().load_table("bronze.stations").current_snapshot().snapshot_id
            yield Trail(instance, bronze, source, snapshot, ok.run_id, failed.run_id)
    code_identity.cache_clear()


def use_fresh_catalog(monkeypatch: pytest.MonkeyPatch, path: Path) -> IcebergCatalog:
    monkeypatch.setenv("STRATA_CATALOG_URI", f"sqlite:///{path / 'catalog.db'}")
    monkeypatch.setenv("STRATA_ICEBERG_WAREHOUSE", f"file://{path / 'warehouse'}")
    return settings_catalog()


@pytest.fixture
def trail(runs: Trail, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Trail:
    """The module's runs with an empty audit catalog of this test's own."""
    return replace(runs, catalog=use_fresh_catalog(monkeypatch, tmp_path))


def extracted_checksum(url: str) -> str:
    """The checksum recomputed independently of the run: the source rows the first load extracts."""
    raw = SourceDatabase(url=url).read_arrow(extraction_query(STATIONS, None))
    rows = latest_version_per_key(conform_to_contract(raw, STATIONS, "test", exact=False), STATIONS)
    return table_checksum(rows, [STATIONS.primary_key])


def run_times(instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    record = instance.get_run_record_by_id(run_id)
    start = datetime.fromtimestamp(record.start_time, UTC)
    end = datetime.fromtimestamp(record.end_time, UTC)
    return {"start_time": start, "end_time": end, "duration_s": round(end.timestamp() - start.timestamp(), 6)}


def stored_records(catalog: IcebergCatalog) -> list[AuditRecord]:
    table = catalog.load().load_table(RUN_LOG_TABLE)
    return sorted(records_from_arrow(table.scan().to_arrow()), key=lambda r: r.run_id)


# --- the records -------------------------------------------------------------------------------------


def test_successful_run_record_holds_the_exact_values(trail: Trail):
    assert build_audit_record(trail.instance, trail.ok_run) == AuditRecord(
        run_id=trail.ok_run,
        job_name="__ephemeral_asset_job__",
        status="SUCCESS",
        trigger="backfill",
        trigger_detail="backfill-cli",
        asset_keys=["bronze/stations"],
        partitions=[],
        code_version=GIT_SHA,  # the asset declares no code version: the git sha stands for it
        git_sha=GIT_SHA,
        image=IMAGE,
        data_windows={"bronze/stations": "[-inf, 2026-10-01 09:30:00)"},
        input_partitions=["stations@updated_at>=-inf"],
        rows_in=3,
        rows_out=3,
        rows_quarantined=0,
        checksums={"bronze/stations": extracted_checksum(trail.source_url)},
        snapshot_ids={"bronze/stations": str(trail.stations_snapshot)},
        checks_passed=["bronze/stations:stations_loaded"],
        checks_failed=["bronze/stations:capacity_at_most_10"],
        error_summary=None,
        **run_times(trail.instance, trail.ok_run),
    )


def test_failed_run_record_names_step_and_table_and_holds_no_secret(trail: Trail):
    record = build_audit_record(trail.instance, trail.failed_run)
    summary = record.error_summary
    assert record == AuditRecord(
        run_id=trail.failed_run,
        job_name="__ephemeral_asset_job__",
        status="FAILURE",
        trigger="schedule",
        trigger_detail="oltp_hourly",
        asset_keys=["bronze/stations"],  # planned, though never materialized
        code_version=GIT_SHA,
        git_sha=GIT_SHA,
        image=IMAGE,
        error_summary=summary,
        **run_times(trail.instance, trail.failed_run),
    )
    assert summary.startswith(
        "[STEP_FAILURE] step bronze__stations: RuntimeError: read failed on "
        "postgresql://strata:***@db.internal:5432/oltp (session ***): "
    )
    assert "no such table: stations" in summary
    assert len(summary) <= MAX_ERROR_CHARS

    # The event log does hold the secrets (so the scrubbing is what keeps them out) ...
    raw_log = "".join(dg.serialize_value(e) for e in trail.instance.all_logs(trail.failed_run))
    assert all(secret in raw_log for secret in SECRETS)
    # ... and no serialisation of the record does.
    for text in (record.to_json(), str(records_to_arrow([record]).to_pylist()), repr(record)):
        for secret in SECRETS:
            assert secret not in text


def test_canceled_run_gets_a_record_too():
    with dg.instance_for_test() as instance:
        run = instance.add_run(
            dg.DagsterRun(job_name="load_hourly", run_id=str(uuid.uuid4()), tags={"dagster/sensor_name": "telemetry"})
        )
        instance.report_run_canceled(run, message=f"canceled by ops (Authorization: Bearer {PLANTED_TOKEN})")
        record = build_audit_record(instance, run.run_id, secrets=())
    assert (record.status, record.trigger, record.trigger_detail) == ("CANCELED", "sensor", "telemetry")
    assert record.start_time is None and record.duration_s is None and record.end_time is not None
    assert record.error_summary == "canceled: canceled by ops (Authorization: Bearer ***)"


def test_a_run_its_guard_stopped_says_why(tmp_path: Path):
    """The ingestion guard ends a run as a success that wrote nothing; the record carries the reason."""
    source = f"sqlite:///{tmp_path / 'oltp.sqlite'}"
    execute(source, CREATE.format(ts="TEXT"))
    resources = {
        "source_db": SourceDatabase(url=source),
        "iceberg": IcebergCatalog(uri=f"sqlite:///{tmp_path / 'cat.db'}", warehouse=f"file://{tmp_path / 'wh'}"),
        "guard": IngestionGuard(data_path=str(tmp_path), min_free_disk_gb=1e12),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([build_oltp_asset(STATIONS)], resources=resources, instance=instance)
        record = build_audit_record(instance, result.run_id, secrets=())
    assert (record.status, record.rows_out, record.snapshot_ids, record.error_summary) == ("SUCCESS", 0, {}, None)
    assert record.not_run_reason.startswith("free disk under ")


def test_a_range_run_sums_each_partitions_own_rows_and_keeps_them_per_partition():
    """Each partition of a single-run range has its own event with its own values: rows are summed over
    the partitions (two days with equal numbers are not copies of one), each partition's rows are kept,
    and the days' contiguous windows read as one."""
    rows_out = {"2026-10-01": 4, "2026-10-02": 4, "2026-10-03": 9}

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition("2026-10-01"), backfill_policy=dg.BackfillPolicy.single_run())
    def daily(context) -> dg.MaterializeResult:
        for day in context.partition_keys:
            next_day = f"2026-10-{int(day[-2:]) + 1:02d}"
            context.add_asset_metadata(
                {"strata/rows_in": 5, "strata/rows_out": rows_out[day], "strata/data_window": f"[{day}, {next_day})"},
                partition_key=day,
            )
        return dg.MaterializeResult(metadata={"strata/checksum": "c0ffee", "strata/snapshot_id": "7"})

    tags = {"dagster/asset_partition_range_start": "2026-10-01", "dagster/asset_partition_range_end": "2026-10-03"}
    with dg.instance_for_test() as instance:
        result = dg.materialize([daily], instance=instance, tags=tags)
        record = build_audit_record(instance, result.run_id, secrets=())
    assert (record.rows_in, record.rows_out) == (15, 17)
    assert record.partition_rows == {"daily[2026-10-01]": 4, "daily[2026-10-02]": 4, "daily[2026-10-03]": 9}
    assert record.partitions == ["2026-10-01..2026-10-03"]
    assert record.data_windows == {"daily": "[2026-10-01, 2026-10-04)"}
    assert record.checksums == {"daily": "c0ffee"} and record.snapshot_ids == {"daily": "7"}


def test_windows_with_a_gap_stay_per_partition():
    record_windows = _AssetValues()
    record_windows.add("gold/kpi_daily", "2026-10-01", "[2026-10-01, 2026-10-02)")
    record_windows.add("gold/kpi_daily", "2026-10-03", "[2026-10-03, 2026-10-04)")
    record_windows.add("bronze/stations", None, "[-inf, 2026-10-01 09:30:00)")
    assert record_windows.flatten_windows() == {
        "bronze/stations": "[-inf, 2026-10-01 09:30:00)",
        "gold/kpi_daily[2026-10-01]": "[2026-10-01, 2026-10-02)",
        "gold/kpi_daily[2026-10-03]": "[2026-10-03, 2026-10-04)",
    }


# --- the sensor and the Iceberg projection -----------------------------------------------------------


def test_sensor_writes_each_finished_run_exactly_once(trail: Trail):
    sensor = build_audit_sensor()
    context = dg.build_sensor_context(instance=trail.instance, resources={"iceberg": trail.catalog})
    first = sensor(context)
    assert first.skip_reason.skip_message.startswith("2 finished run(s) read -> 2 audit record(s) written")
    table = trail.catalog.load().load_table(RUN_LOG_TABLE)
    snapshots = len(table.snapshots())

    second = sensor(
        dg.build_sensor_context(instance=trail.instance, cursor=first.cursor, resources={"iceberg": trail.catalog})
    )
    assert "-> 0 audit record(s) written" in second.skip_reason.skip_message
    assert len(table.refresh().snapshots()) == snapshots  # no empty commit
    assert stored_records(trail.catalog) == trail.built()

    # A lost cursor (or a run seen again after a tag change) finds the runs already in the table.
    again = process_finished_runs(trail.instance, trail.catalog, AuditCursor())
    assert again.written == [] and sorted(again.already_recorded) == sorted([trail.ok_run, trail.failed_run])
    assert len(stored_records(trail.catalog)) == 2

    # No secret reached the table.
    text = str(table.refresh().scan().to_arrow().to_pylist())
    assert not any(secret in text for secret in SECRETS)


def test_the_cursor_picks_up_runs_finished_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    catalog = use_fresh_catalog(monkeypatch, tmp_path)

    def cancel_a_run(instance: dg.DagsterInstance) -> str:
        run = instance.add_run(dg.DagsterRun(job_name="build_daily", run_id=str(uuid.uuid4())))
        instance.report_run_canceled(run)
        return run.run_id

    with dg.instance_for_test() as instance:
        first_run = cancel_a_run(instance)
        first = process_finished_runs(instance, catalog, AuditCursor(), secrets=())
        later_run = cancel_a_run(instance)
        second = process_finished_runs(instance, catalog, first.cursor, secrets=())
        third = process_finished_runs(instance, catalog, second.cursor, secrets=())
    assert (first.written, second.written, third.written) == ([first_run], [later_run], [])
    assert second.cursor.after >= first.cursor.after
    assert [(r.run_id, r.status) for r in stored_records(catalog)] == sorted(
        [(first_run, "CANCELED"), (later_run, "CANCELED")]
    )


def test_a_tick_out_of_time_commits_what_it_built_and_the_next_goes_on(tmp_path: Path, monkeypatch):
    catalog = use_fresh_catalog(monkeypatch, tmp_path)
    with dg.instance_for_test() as instance:
        run_ids = []
        for _ in range(3):
            run = instance.add_run(dg.DagsterRun(job_name="load_hourly", run_id=str(uuid.uuid4())))
            instance.report_run_canceled(run)
            run_ids.append(run.run_id)
        cursor, written = AuditCursor(), []
        for _ in range(4):
            # No time at all: each tick still records one run, in update order, and moves the cursor past it.
            outcome = process_finished_runs(instance, catalog, cursor, budget_s=0, secrets=())
            cursor = outcome.cursor
            written.append(outcome.written)
    assert written == [[run_ids[0]], [run_ids[1]], [run_ids[2]], []]
    assert [r.run_id for r in stored_records(catalog)] == sorted(run_ids)


def test_rebuild_recreates_the_table_from_the_instance(trail: Trail):
    process_finished_runs(trail.instance, trail.catalog, AuditCursor())
    table = trail.catalog.load().load_table(RUN_LOG_TABLE)
    # Tamper with the projection: the rebuild must restore it from the event log.
    table.overwrite(records_to_arrow(trail.built()[:1]))
    assert rebuild_run_log(trail.instance, trail.catalog) == 2
    assert stored_records(trail.catalog) == trail.built()
    assert process_finished_runs(trail.instance, trail.catalog, AuditCursor()).written == []


def test_a_run_log_of_the_old_schema_is_evolved_and_keeps_its_rows(trail: Trail):
    """`audit.run_log` created before `partition_rows` existed: the CLI still reads it, the next write
    adds the column in place (no rewrite), and old rows read back with no partition rows."""
    old_schema = pa.schema([f for f in RUN_LOG_SCHEMA if f.name != "partition_rows"])
    old_table = trail.catalog.load_or_create_table(RUN_LOG_TABLE, old_schema)
    ok, failed = sorted(trail.built(), key=lambda r: r.run_id != trail.ok_run)
    old_table.append(records_to_arrow([ok]).select(old_schema.names).cast(old_schema))
    assert iceberg_records(trail.catalog, AuditFilter()) == [ok]

    written = process_finished_runs(trail.instance, trail.catalog, AuditCursor()).written
    assert written == [failed.run_id]
    table = trail.catalog.load().load_table(RUN_LOG_TABLE)
    assert table.schema().column_names == RUN_LOG_SCHEMA.names
    assert table.scan().to_arrow().column("partition_rows").to_pylist().count(None) == 1  # the old row
    assert stored_records(trail.catalog) == trail.built()


def test_cursor_round_trips():
    cursor = AuditCursor(1795603774.354511, {"a": 1795603774.354511, "b": 1795603773.5})
    assert AuditCursor.parse(cursor.serialize()) == cursor
    assert AuditCursor.parse(None) == AuditCursor()


# --- the CLI -----------------------------------------------------------------------------------------


def test_cli_exports_exactly_the_failed_run_as_csv(trail: Trail, tmp_path: Path, capsys):
    process_finished_runs(trail.instance, trail.catalog, AuditCursor())
    out = tmp_path / "export" / "failed.csv"
    assert main(["export", "--format", "csv", "--out", str(out), "--status", "FAILURE"]) == 0
    assert "exported 1 record(s)" in capsys.readouterr().out

    with out.open(newline="") as handle:
        assert [r["run_id"] for r in csv.DictReader(handle)] == [trail.failed_run]
    # CSV writes a null as an empty field; this record has no empty text field, so read empties as nulls.
    options = pacsv.ConvertOptions(column_types=RUN_LOG_SCHEMA, strings_can_be_null=True)
    assert records_from_arrow(pacsv.read_csv(out, convert_options=options)) == [
        build_audit_record(trail.instance, trail.failed_run)
    ]
    assert not any(secret in out.read_text() for secret in SECRETS)


@pytest.mark.parametrize("source", ["iceberg", "instance"])
def test_cli_parquet_round_trip_matches_the_instance(trail: Trail, tmp_path: Path, source: str):
    process_finished_runs(trail.instance, trail.catalog, AuditCursor())
    out = tmp_path / f"{source}.parquet"
    assert main(["export", "--format", "parquet", "--out", str(out), "--source", source]) == 0
    exported = pq.read_table(out)
    assert exported.schema.names == RUN_LOG_SCHEMA.names
    assert sorted(records_from_arrow(exported), key=lambda r: r.run_id) == trail.built()


def test_cli_list_filters_by_asset_run_and_time(trail: Trail, capsys):
    process_finished_runs(trail.instance, trail.catalog, AuditCursor())
    main(["list", "--asset", "bronze/stations", "--since", "2000-01-01"])
    listing = capsys.readouterr().out
    assert trail.ok_run in listing and trail.failed_run in listing and "2 record(s)" in listing
    assert "no such table: stations" in listing and PLANTED_PASSWORD not in listing

    main(["list", "--run", trail.ok_run, "--status", "success"])
    listing = capsys.readouterr().out
    assert trail.ok_run in listing and trail.failed_run not in listing

    main(["list", "--until", "2000-01-01"])
    assert "0 record(s)" in capsys.readouterr().out
    main(["list", "--asset", "gold/kpi_daily", "--source", "instance"])
    assert "0 record(s)" in capsys.readouterr().out


def test_cli_rebuild(trail: Trail, capsys):
    assert main(["rebuild"]) == 0
    assert f"rebuilt {RUN_LOG_TABLE}: 2 record(s)" in capsys.readouterr().out
    assert stored_records(trail.catalog) == trail.built()


# --- pure functions ----------------------------------------------------------------------------------


def test_scrub_removes_url_passwords_assignments_tokens_and_known_values():
    text = (
        "connect postgresql://strata:s3cret@db:5432/oltp and mysql+pymysql://u:p%40ss@h/x, "
        "https://user:pw@example.com/path; password=hunter2 token: abc.def api_key='k-123' "
        "Authorization: Bearer eyJhbGciOi.payload.sig; vault said hvs.XYZ-known-value-1"
    )
    scrubbed = scrub(text, ["hvs.XYZ-known-value-1"])
    for secret in ("s3cret", "p%40ss", ":pw@", "hunter2", "abc.def", "k-123", "eyJhbGciOi", "hvs.XYZ"):
        assert secret not in scrubbed
    assert "postgresql://strata:***@db:5432/oltp" in scrubbed
    assert "https://user:***@example.com/path" in scrubbed
    assert scrub("no table named stations in sqlite:///tmp/oltp.sqlite") == (
        "no table named stations in sqlite:///tmp/oltp.sqlite"
    )


def test_secret_values_come_from_secret_looking_variable_names():
    environ = {
        "STRATA_SOURCE_PASSWORD": "hunter22",
        "AWS_SECRET_ACCESS_KEY": "abcd1234",
        "VAULT_TOKEN": "hvs.x9",
        "DB_CREDENTIALS": "user:pass",
        "FEATURE_KEY_ENABLED": "1",  # too short to be a secret; scrubbing it would mangle every message
        "STRATA_SECRET_ALERTING__CLIENT_SECRET": "client-s3cret",  # a value, in the env backend
        # Names of secrets and of the backend, not secrets:
        "STRATA_SOURCE_PASSWORD_SECRET": "source_db/password",
        "STRATA_ICEBERG_SECRET_PROP_S3__SECRET_ACCESS_KEY": "iceberg/s3_secret_access_key",
        "STRATA_SECRETS_BACKEND": "vault",
        "PATH": "/usr/bin",
        "HOME": "/root",
    }
    assert secret_values(environ) == {"hunter22", "abcd1234", "hvs.x9", "user:pass", "client-s3cret"}


def test_error_summary_scrubs_before_truncating():
    secret = "planted-secret-at-the-cut"
    error = SerializableErrorInfo(message="x" * (MAX_ERROR_CHARS - 40) + secret, stack=[], cls_name="RuntimeError")
    summary = error_summary("FAILURE", [("step_a", error)], None, None, "STEP_FAILURE", [secret])
    assert len(summary) <= MAX_ERROR_CHARS
    assert secret[:8] not in summary and summary.startswith("[STEP_FAILURE] step step_a: xxx")


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"dagster/schedule_name": "nightly"}, ("schedule", "nightly")),
        ({"dagster/sensor_name": "telemetry_drop_sensor"}, ("sensor", "telemetry_drop_sensor")),
        ({"dagster/backfill": "abcd", "dagster/sensor_name": "s"}, ("backfill", "abcd")),
        ({"strata/trigger": "backfill-cli"}, ("backfill", "backfill-cli")),
        ({"dagster/parent_run_id": "r1"}, ("manual", "re-execution of r1")),
        ({}, ("manual", "")),
    ],
)
def test_classify_trigger(tags, expected):
    assert classify_trigger(tags) == expected


def test_partition_filter_covers_keys_days_and_ranges():
    assert partition_matches("2026-10-03", "2026-10-03")
    assert partition_matches("2026-10-03-05:00", "2026-10-03")  # an hour of the day asked for
    assert partition_matches("2026-10-01..2026-10-05", "2026-10-03")
    assert partition_matches("2026-10-01-00:00..2026-10-03-23:00", "2026-10-03")
    assert not partition_matches("2026-10-01..2026-10-02", "2026-10-03")
    assert not partition_matches("2026-10-30", "2026-10-3")
    record = AuditRecord("r", "j", "SUCCESS", "manual", "", asset_keys=["gold/kpi_daily"], partitions=["2026-10-03"])
    assert AuditFilter(asset="gold/kpi_daily", partition="2026-10-03", status="success").matches(record)
    assert not AuditFilter(asset="gold/kpi_daily", since=datetime(2026, 1, 1, tzinfo=UTC)).matches(record)


def test_arrow_round_trip_keeps_every_field():
    record = AuditRecord(
        "r1",
        "build_daily",
        "FAILURE",
        "backfill",
        "b1",
        asset_keys=["gold/kpi_daily"],
        partitions=["2026-10-01..2026-10-03"],
        checksums={"gold/kpi_daily": "c"},
        rows_in=7,
        start_time=datetime(2026, 10, 4, 1, 2, 3, 456789, tzinfo=UTC),
        end_time=datetime(2026, 10, 4, 1, 3, tzinfo=UTC),
        duration_s=56.543211,
        error_summary="step x: boom",
    )
    table = records_to_arrow([record])
    assert table.schema == RUN_LOG_SCHEMA
    assert records_from_arrow(table) == [record]
