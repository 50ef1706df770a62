"""`maintenance/iceberg_tables`: the scheduled upkeep of every Iceberg table Strata writes.

One asset, run daily by the `iceberg_table_maintenance` schedule (jobs/schedules.py), maintains every
table of the namespaces its retention table lists (jobs/policies.py `TABLE_RETENTION`: Bronze, and the
audit tables such as the run log) with resources/iceberg_maintenance.py. It has no lineage edges: it
neither reads nor changes any row, and an edge from Bronze would pull it into every "materialize
downstream" selection and backfill of Bronze.

A table whose maintenance fails does not stop the others: their figures are reported, then the run
fails naming the table(s). Maintenance changes no row, so a later run simply tries again.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from resources.iceberg import IcebergCatalog
from resources.iceberg_maintenance import RetentionPolicy, TableMaintenance, maintain_table

MAINTENANCE_GROUP = "maintenance"
MAINTENANCE_TABLES = dg.AssetKey([MAINTENANCE_GROUP, "iceberg_tables"])
TOTALS = ("data_files_before", "data_files_after", "snapshots_expired", "orphan_files_removed", "bytes_removed")


def build_table_maintenance_asset(retention: Sequence[tuple[str, str, RetentionPolicy]]) -> dg.AssetsDefinition:
    """The maintenance asset for `retention`: (reason, namespace, policy) rows, one namespace per row."""
    namespaces = [namespace for _, namespace, _ in retention]
    if len(set(namespaces)) != len(namespaces):
        raise ValueError(f"the retention table names a namespace twice: {namespaces}")

    @dg.asset(
        key=MAINTENANCE_TABLES,
        group_name=MAINTENANCE_GROUP,
        kinds={"iceberg", "python"},
        description=(
            "Daily upkeep of the Iceberg tables of namespaces "
            + ", ".join(namespaces)
            + ": compaction of small data files, snapshot expiry and orphan-file removal under the "
            "retention policy of jobs/policies.py."
        ),
    )
    def iceberg_tables(context: dg.AssetExecutionContext, iceberg: IcebergCatalog) -> dg.MaterializeResult:
        catalog = iceberg.load()
        existing = {ns[0] for ns in catalog.list_namespaces()}
        now = datetime.now(UTC)
        reports: list[TableMaintenance] = []
        failed: dict[str, str] = {}
        for _, namespace, policy in retention:
            if namespace not in existing:
                continue
            for identifier in sorted(catalog.list_tables(namespace)):
                name = ".".join(identifier[-2:])
                try:
                    report = maintain_table(catalog.load_table(identifier), policy, now=now)
                except Exception as error:  # the other tables are still maintained; the run fails below
                    context.log.error(f"maintenance of {name} failed: {type(error).__name__}: {error}")
                    failed[name] = f"{type(error).__name__}: {error}"
                    continue
                context.log.info(
                    f"{name}: data files {report.data_files_before} -> {report.data_files_after} "
                    f"({report.partitions_compacted} partition(s) compacted), {report.snapshots_expired} of "
                    f"{report.snapshots_before} snapshot(s) expired, {report.orphan_files_removed} orphan file(s) "
                    f"({report.bytes_removed} bytes) removed"
                )
                for skipped in report.skipped:
                    context.log.warning(f"{name}: not compacted: {skipped}")
                reports.append(report)
        metadata = maintenance_metadata(reports)
        if failed:
            raise dg.Failure(
                description=f"maintenance failed for {', '.join(sorted(failed))}: {failed}",
                metadata={**metadata, "strata/failed_tables": dg.MetadataValue.json(failed)},
            )
        return dg.MaterializeResult(metadata=metadata)

    return iceberg_tables


def maintenance_metadata(reports: Sequence[TableMaintenance]) -> dict[str, object]:
    """Totals, and each table's figures (bounded by the number of tables, not by their history)."""
    totals = {f"strata/{name}": sum(getattr(r, name) for r in reports) for name in TOTALS}
    per_table = {
        r.table: {k: v for k, v in r.as_dict().items() if k not in ("table", "skipped")} | {"skipped": len(r.skipped)}
        for r in reports
    }
    return {**totals, "strata/tables": dg.MetadataValue.json(per_table)}
