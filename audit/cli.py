"""`audit`: list, export and rebuild the audit trail.

    audit list   [filters]                          a table on stdout
    audit export [filters] --format csv|parquet --out FILE
    audit rebuild                                   recreate audit.run_log from the Dagster instance
    audit replay RUN_ID [--keep]                    re-run a dbt run on the Iceberg snapshots it read and
                                                    compare checksums: "identical" or what differs
    audit slo --since DATE [--until DATE] [--html FILE] [--json]
                                                    SLO figures per asset group (audit/slo.py)
    audit cutover [--json]                          migrated tables: dual run, matching days, cut over

Filters: --asset layer/table, --partition KEY (a day also finds the hourly runs of that day, and range
runs covering it), --run RUN_ID, --status SUCCESS|FAILURE|CANCELED, --since / --until (on the run's start
time; a date given to --until includes that whole day). `--source iceberg` (default) reads the
`audit.run_log` table; `--source instance` rebuilds the records from the event log, which is the source of
truth, so the two can be compared.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa

from audit.cutover import cutover_json, cutover_view, format_cutover
from audit.query import AuditFilter, partition_matches
from audit.record import AuditRecord, build_audit_records, finished_run_records
from audit.run_log import RUN_LOG_TABLE, rebuild_run_log, records_from_arrow, records_to_arrow
from resources.iceberg import IcebergCatalog
from resources.outputs import OutputsArea
from resources.settings import load_settings

STATUSES = ("SUCCESS", "FAILURE", "CANCELED")


def settings_catalog() -> IcebergCatalog:
    """The Iceberg catalog of this environment, as `build_resources` configures it (without dbt)."""
    return IcebergCatalog.from_settings(load_settings())


def parse_time(value: str, *, end_of_day: bool = False) -> datetime:
    """ISO date or datetime; naive means UTC. `end_of_day` turns a bare date into the next midnight."""
    if len(value) == 10:
        day = date.fromisoformat(value)
        moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return moment + timedelta(days=1) if end_of_day else moment
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def filter_from_args(args: argparse.Namespace) -> AuditFilter:
    return AuditFilter(
        asset=args.asset,
        partition=args.partition,
        run_id=args.run,
        status=args.status,
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until, end_of_day=True) if args.until else None,
    )


def iceberg_records(catalog: IcebergCatalog, wanted: AuditFilter) -> list[AuditRecord]:
    """Records from `audit.run_log`; run, status and time filters are pushed down to the scan."""
    from pyiceberg.expressions import AlwaysTrue, And, EqualTo, GreaterThanOrEqual, LessThan

    table = catalog.table_or_none(RUN_LOG_TABLE)
    if table is None or table.current_snapshot() is None:
        return []
    row_filter = AlwaysTrue()
    if wanted.run_id:
        row_filter = And(row_filter, EqualTo("run_id", wanted.run_id))
    if wanted.status:
        row_filter = And(row_filter, EqualTo("status", wanted.status.upper()))
    if wanted.since:
        row_filter = And(row_filter, GreaterThanOrEqual("start_time", wanted.since.isoformat()))
    if wanted.until:
        row_filter = And(row_filter, LessThan("start_time", wanted.until.isoformat()))
    return [r for r in records_from_arrow(table.scan(row_filter=row_filter).to_arrow()) if wanted.matches(r)]


def instance_records(instance: dg.DagsterInstance, wanted: AuditFilter) -> list[AuditRecord]:
    """Records rebuilt from the event log. A run ends after it starts, so `since` bounds its update time."""
    runs = finished_run_records(
        instance,
        run_ids=[wanted.run_id] if wanted.run_id else None,
        statuses=[wanted.status.upper()] if wanted.status else None,
        updated_after=wanted.since - timedelta(microseconds=1) if wanted.since else None,
    )
    return [r for r in build_audit_records(instance, runs) if wanted.matches(r)]


def select_records(args: argparse.Namespace) -> list[AuditRecord]:
    wanted = filter_from_args(args)
    if args.source == "instance":
        with dg.DagsterInstance.get() as instance:
            records = instance_records(instance, wanted)
    else:
        records = iceberg_records(settings_catalog(), wanted)
    return sorted(records, key=lambda r: (r.start_time or datetime.min.replace(tzinfo=UTC), r.run_id))


def partition_rows_of(record: AuditRecord, wanted: AuditFilter) -> list[str]:
    """`asset[partition]=rows` entries of a record that the filter's asset and partition select."""
    entries = []
    for name, rows in record.partition_rows.items():
        asset, _, partition = name.partition("[")
        if wanted.asset and asset != wanted.asset:
            continue
        if wanted.partition and not partition_matches(partition.rstrip("]"), wanted.partition):
            continue
        entries.append(f"{name}={rows}")
    return entries


def format_listing(records: Sequence[AuditRecord], wanted: AuditFilter | None = None) -> str:
    """A fixed-width table for a terminal: the columns an auditor scans first. Asked for a partition,
    it also lists the rows each run wrote to that partition (of the asset asked for, if any)."""
    header = ("run_id", "job", "status", "trigger", "start (UTC)", "secs", "rows in/out/quar", "assets", "partitions")
    lines = [header]
    for r in records:
        assets = ",".join(r.asset_keys[:3]) + (f",+{len(r.asset_keys) - 3}" if len(r.asset_keys) > 3 else "")
        lines.append(
            (
                r.run_id,
                r.job_name,
                r.status,
                r.trigger,
                f"{r.start_time:%Y-%m-%d %H:%M:%S}" if r.start_time else "-",
                f"{r.duration_s:.1f}" if r.duration_s is not None else "-",
                f"{r.rows_in}/{r.rows_out}/{r.rows_quarantined}",
                assets or "-",
                ",".join(r.partitions) or "-",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    failures = [f"  {r.run_id}: {r.error_summary}" for r in records if r.error_summary]
    written = []
    if wanted is not None and wanted.partition:
        written = [f"  {r.run_id}: {', '.join(e)}" for r in records if (e := partition_rows_of(r, wanted))]
    return "\n".join(
        [
            *text,
            f"{len(records)} record(s)",
            *(["rows written per partition:", *written] if written else []),
            *(["errors:", *failures] if failures else []),
        ]
    )


def write_export(records: Sequence[AuditRecord], fmt: str, out: Path) -> None:
    table: pa.Table = records_to_arrow(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audit", description="Query and export Strata's run audit trail.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("list", "print matching records"), ("export", "write matching records to a file")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--asset", help="asset key as layer/table, e.g. gold/kpi_daily")
        sub.add_argument("--partition", help="partition key, e.g. 2026-10-03")
        sub.add_argument("--run", help="run id")
        sub.add_argument("--status", type=str.upper, choices=STATUSES)
        sub.add_argument("--since", help="runs started at or after this ISO date/time (UTC)")
        sub.add_argument("--until", help="runs started before this ISO time; a date includes that day (UTC)")
        sub.add_argument("--source", choices=("iceberg", "instance"), default="iceberg")
        if name == "export":
            sub.add_argument("--format", choices=("csv", "parquet"), required=True)
            sub.add_argument("--out", type=Path, required=True)
    commands.add_parser("rebuild", help=f"recreate {RUN_LOG_TABLE} from the Dagster instance's event log")
    replay = commands.add_parser("replay", help="re-run a recorded dbt run on its snapshots, compare checksums")
    replay.add_argument("run_id")
    replay.add_argument("--keep", action="store_true", help="keep the scratch warehouse under <root>/replay/")
    slo = commands.add_parser("slo", help="SLO figures per asset group, from the event log")
    slo.add_argument("--since", required=True, help="runs started at or after this ISO date/time (UTC)")
    slo.add_argument("--until", help="runs started before this ISO time; a date includes that day (default: now)")
    slo.add_argument("--html", type=Path, help="also write the HTML page (table and chart) here")
    slo.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    cutover = commands.add_parser("cutover", help="the migrated tables' dual-run parity and cut-over readiness")
    cutover.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def replay_command(run_id: str, keep: bool) -> int:
    """Exit status 0 when the replay is identical, 1 when it differs, 2 when the run cannot be replayed."""
    from audit.replay import ReplayError, replay_run

    try:
        with dg.DagsterInstance.get() as instance:
            result = replay_run(instance, run_id, load_settings(), keep=keep)
    except ReplayError as error:
        print(f"cannot replay: {error}")
        return 2
    print(result.report())
    return 0 if result.identical else 1


def print_slo(args: argparse.Namespace) -> None:
    import json

    from audit.slo import collect_history, compute_slo, slo_as_json, slo_html, slo_text
    from resources.settings import DBT_PROJECT_DIR

    since = parse_time(args.since)
    until = parse_time(args.until, end_of_day=True) if args.until else datetime.now(UTC)
    with dg.DagsterInstance.get() as instance:
        rows = compute_slo(collect_history(instance, since, until, DBT_PROJECT_DIR / "target" / "manifest.json"))
    if args.html:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(slo_html(rows, since, until))
    print(json.dumps(slo_as_json(rows), indent=2) if args.json else slo_text(rows, since, until))


def settings_outputs() -> OutputsArea:
    """The outputs area of this environment (where the parity reports are published)."""
    settings = load_settings()
    return OutputsArea(
        root=settings.outputs_root, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "rebuild":
        with dg.DagsterInstance.get() as instance:
            count = rebuild_run_log(instance, settings_catalog())
        print(f"rebuilt {RUN_LOG_TABLE}: {count} record(s)")
        return 0
    if args.command == "replay":
        return replay_command(args.run_id, args.keep)
    if args.command == "slo":
        print_slo(args)
        return 0
    if args.command == "cutover":
        view = cutover_view(settings_outputs())
        print(cutover_json(view) if args.json else format_cutover(view))
        return 0
    records = select_records(args)
    if args.command == "list":
        print(format_listing(records, filter_from_args(args)))
    else:
        write_export(records, args.format, args.out)
        print(f"exported {len(records)} record(s) to {args.out} ({args.format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
