"""File drops at scale: the READY-marker sensor over a big S3 landing zone, and drop verification.

Sensor (moto's S3 server in its own process on 127.0.0.1): 10,000 READY hourly drops of 10 objects
each plus a few drops without `_READY` (> 100,000 objects). Figure A is the first tick (empty
cursor, empty ledger) that must request all 10,000 drops; figure B the next tick, with A's cursor,
after 10 new drops landed. Floor: the raw boto3 ListObjectsV2 listing of the same keys (A: the whole
dataset prefix; B: from the `start_after` key of A's cursor) with no grouping, ledger or Dagster.
The filler's drops are protocol-complete (valid manifests whose sha256 match the part files), but
their rows are a tiny fixed table: the sensor never reads them.

Verification: one hour drop of ~1M realistic rows (the generator at scale 24). Platform:
`load_hour_range` (sha256, parse, row count, contract, checksum, Iceberg overwrite, ledger append).
Floor: pyarrow reads the same parquet file and `Table.append`s it to an Iceberg table with the same
schema and hour partition spec, in the same process.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa

from tests.benchmarks.measure import Measurement, measured, report

DATASET = "telemetry"
SENSOR_START = datetime(2025, 1, 1)
READY_DROPS = 10_000
PARTS_PER_DROP = 8
INCOMPLETE_DROPS = 5  # parts + manifest, no _READY: a producer still writing
INCOMPLETE_FIRST_HOUR = READY_DROPS + 20  # clear of the NEW_DROPS hours
NEW_DROPS = 10
FILL_THREADS = 16
FILL_POOL_CONNECTIONS = 32
LIST_PAGE_SIZE = 1000  # what the landing zone asks for (S3's maximum)
TICK_A_TARGET_S = 10.0
TICK_B_TARGET_S = 1.0

LOAD_SCALE = 24.0  # 24,000 vehicles x 42 readings = 1,008,000 rows in one hour
LOAD_START = date(2026, 3, 1)
LOAD_HOUR = 12
LOAD_REPEATS = 5
VERIFICATION_TARGET = 1.30


# --- moto S3 server outside pytest ------------------------------------------------------------------


@contextmanager
def moto_endpoint() -> Iterator[str]:
    """The `s3_endpoint` fixture as a plain context manager: moto's server on a free 127.0.0.1 port."""
    from tests.s3_server import HOST, PORT_ATTEMPTS, _free_port, _start_moto, _stop

    for _ in range(PORT_ATTEMPTS):
        port = _free_port()
        process = _start_moto(port)
        if process is not None:
            break
    else:
        raise RuntimeError(f"moto server failed to start on {PORT_ATTEMPTS} free ports")
    try:
        yield f"http://{HOST}:{port}"
    finally:
        _stop(process)


@contextmanager
def fake_aws_environment() -> Iterator[None]:
    """Fake credentials (and no profile or endpoint override) while the block runs; restored after."""
    from tests.s3_server import FAKE_CREDENTIALS, UNSET_AWS_VARIABLES

    saved = {name: os.environ.get(name) for name in (*FAKE_CREDENTIALS, *UNSET_AWS_VARIABLES)}
    for name in UNSET_AWS_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(FAKE_CREDENTIALS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def s3_client(endpoint: str, **config):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(**config) if config else None
    )


# --- filling the landing zone -----------------------------------------------------------------------


def tiny_parts() -> dict[str, tuple[bytes, int]]:
    """{part name: (parquet bytes, rows)}: one small contract-conformant parquet blob per part."""
    from assets.contracts import file_drop_contracts
    from demo.drop_producer import PART_NAME_FORMAT, parquet_bytes

    schema = file_drop_contracts()[DATASET].arrow_schema()
    parts = {}
    for index in range(PARTS_PER_DROP):
        rows = 4
        table = pa.table(
            {
                "vehicle_id": [index * rows + i + 1 for i in range(rows)],
                "ts": pa.array([SENSOR_START + timedelta(minutes=i) for i in range(rows)], pa.timestamp("us")),
                "lat": [45.0] * rows,
                "lon": [4.0] * rows,
                "speed_kmh": [float(i) for i in range(rows)],
                "battery_pct": [80.0] * rows,
                "odometer_km": [100.0 + i for i in range(rows)],
                "fault_code": pa.array([None] * rows, pa.string()),
            },
            schema=schema,
        )
        parts[PART_NAME_FORMAT.format(index=index)] = (parquet_bytes(table), rows)
    return parts


def drop_objects(hour: int, parts: dict[str, tuple[bytes, int]], ready: bool) -> list[tuple[str, bytes]]:
    """(key relative to the zone, bytes) of one drop, in the producer's order: parts, manifest, _READY."""
    from assets.drop_protocol import MANIFEST_NAME, READY_NAME, drop_prefix
    from demo.drop_producer import build_manifest

    hour_start = SENSOR_START + timedelta(hours=hour)
    prefix = drop_prefix(DATASET, hour_start)
    objects = [(prefix + name, data) for name, (data, _) in parts.items()]
    manifest = build_manifest(DATASET, hour_start, parts, schema_version=1)  # its partition makes the etag unique
    objects.append((prefix + MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode()))
    if ready:
        objects.append((prefix + READY_NAME, b""))
    return objects


def upload_drops(client, bucket: str, root: str, drops: list[tuple[int, bool]]) -> int:
    """PUT the drops (hour, ready) with a thread pool, one drop per task in protocol order; return objects."""
    parts = tiny_parts()

    def put(drop: tuple[int, bool]) -> int:
        objects = drop_objects(drop[0], parts, drop[1])
        for key, data in objects:
            client.put_object(Bucket=bucket, Key=root + key, Body=data)
        return len(objects)

    with ThreadPoolExecutor(FILL_THREADS) as pool:
        return sum(pool.map(put, drops))


# --- benchmark 1: the sensor tick -------------------------------------------------------------------


def list_floor(client, bucket: str, prefix: str, start_after: str = "") -> tuple[Measurement, int]:
    """Raw ListObjectsV2 pages of `prefix` (from `start_after`), every key touched, nothing else."""
    arguments = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        arguments["StartAfter"] = start_after
    count = 0
    with measured() as m:
        pages = client.get_paginator("list_objects_v2").paginate(
            **arguments, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
        )
        for page in pages:
            count += sum(1 for item in page.get("Contents", []) if item["Key"])
    return m, count


def bench_sensor(tmp: Path, profile: bool) -> list[str]:
    from assets.bronze_telemetry import build_telemetry_asset
    from assets.drop_ledger import loaded_drop_versions
    from assets.partitions import hourly_partitions
    from resources.iceberg import IcebergCatalog
    from resources.landing import LandingZone
    from sensors.telemetry_drop_sensor import SensorCursor, build_telemetry_drop_sensor

    bucket, root = f"strata-bench-{uuid.uuid4().hex[:12]}", "landing/"
    lines = []
    with fake_aws_environment(), moto_endpoint() as endpoint:
        filler = s3_client(endpoint, max_pool_connections=FILL_POOL_CONNECTIONS)
        filler.create_bucket(Bucket=bucket)
        drops = [(h, True) for h in range(READY_DROPS)]
        drops += [(INCOMPLETE_FIRST_HOUR + i, False) for i in range(INCOMPLETE_DROPS)]
        with measured() as fill:
            objects = upload_drops(filler, bucket, root, drops)
        lines.append(
            f"sensor fill: {objects} objects ({READY_DROPS} READY drops + {INCOMPLETE_DROPS} without _READY) "
            f"PUT to moto in {fill.seconds:.1f} s ({objects / fill.seconds:.0f} objects/s, {FILL_THREADS} threads)"
        )

        landing = LandingZone(root=f"s3://{bucket}/landing", s3_endpoint_url=endpoint)
        iceberg = IcebergCatalog(uri=f"sqlite:///{tmp / 'catalog.db'}", warehouse=f"file://{tmp / 'warehouse'}")
        asset = build_telemetry_asset(hourly_partitions(SENSOR_START.date()))
        sensor = build_telemetry_drop_sensor(DATASET, asset)
        instance = dg.DagsterInstance.ephemeral()
        floor_client = s3_client(endpoint)

        # Warm-up outside the figures: imports (dagster-aws, pyiceberg) and both S3 clients, as in a
        # code server that has ticked before.
        with measured() as warm:
            landing.exists(f"{DATASET}/warm-up")
            loaded_drop_versions(iceberg, DATASET)
            floor_client.head_bucket(Bucket=bucket)

        def tick(cursor: str | None) -> dg.SensorResult:
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"landing": landing, "iceberg": iceberg}
            )
            return sensor(context)

        floor_a, listed_a = list_floor(floor_client, bucket, f"{root}{DATASET}/")
        with measured() as tick_a:
            first = tick(None)
        if len(first.run_requests) != READY_DROPS:
            raise RuntimeError(f"first tick requested {len(first.run_requests)} drops, expected {READY_DROPS}")
        profile_lines = profile_tick(lambda: tick(None)) if profile else []

        upload_drops(filler, bucket, root, [(READY_DROPS + i, True) for i in range(NEW_DROPS)])
        start_after = SensorCursor.parse(first.cursor).list_after
        floor_b, listed_b = list_floor(floor_client, bucket, f"{root}{DATASET}/", root + start_after)
        with measured() as tick_b:
            second = tick(first.cursor)
        if len(second.run_requests) != NEW_DROPS:
            raise RuntimeError(f"second tick requested {len(second.run_requests)} drops, expected {NEW_DROPS}")
        instance.dispose()

    lines += [
        f"sensor warm-up (imports, S3 clients, empty ledger read; not in the figures): {warm.seconds:.1f} s",
        report(
            f"sensor tick A, first tick over {listed_a} objects -> {len(first.run_requests)} run requests",
            tick_a,
            floor_a,
            "boto3 ListObjectsV2 of the same prefix",
        ),
        f"  tick A {tick_a.seconds:.2f} s < {TICK_A_TARGET_S:.0f} s target: {tick_a.seconds < TICK_A_TARGET_S}",
        report(
            f"sensor tick B, next tick, {listed_b} objects after '{start_after}' -> "
            f"{len(second.run_requests)} run requests",
            tick_b,
            floor_b,
            "boto3 ListObjectsV2 with the same StartAfter",
        ),
        f"  tick B {tick_b.seconds:.3f} s (floor {floor_b.seconds:.3f} s) < {TICK_B_TARGET_S:.0f} s target: "
        f"{tick_b.seconds < TICK_B_TARGET_S}",
        *profile_lines,
    ]
    return lines


def profile_tick(run: Callable[[], object], top: int = 25) -> list[str]:
    """cProfile of one more first tick: the functions with the most cumulative time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(run)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return ["  profile of tick A (cumulative):", *("    " + line for line in out.getvalue().splitlines() if line)]


# --- benchmark 2: verification + load vs a plain append ---------------------------------------------


def write_big_drop(landing_root: Path) -> tuple[datetime, int]:
    """One hour of realistic telemetry (~1M rows) written as one drop; return (hour start, rows)."""
    from demo.drop_producer import write_drop
    from demo.telemetry import hour_table
    from demo.world import HOUR_US, DemoConfig, build_world, from_us, to_us

    cfg = DemoConfig(start=LOAD_START, days=1, scale=LOAD_SCALE)
    hour = to_us(cfg.start_dt) // HOUR_US + LOAD_HOUR
    table, _ = hour_table(build_world(cfg), hour)
    hour_start = from_us(hour * HOUR_US)
    write_drop(landing_root, DATASET, hour_start, [table])
    return hour_start, table.num_rows


def fresh_catalog(folder: Path):
    from resources.iceberg import IcebergCatalog

    folder.mkdir(parents=True)
    return IcebergCatalog(uri=f"sqlite:///{folder / 'catalog.db'}", warehouse=f"file://{folder / 'warehouse'}")


def floor_table(catalog, contract):
    """A table like `bronze.telemetry`: same schema, partitioned by HourTransform of the time column."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import HourTransform

    from assets.bronze_telemetry import load_or_create_hourly_table

    # Same Iceberg schema (field ids) as the platform's table: create one, copy its schema.
    schema = load_or_create_hourly_table(catalog, contract).schema()
    source_id = schema.find_field(contract.time_column).field_id
    spec = PartitionSpec(PartitionField(source_id, 1000, HourTransform(), f"{contract.time_column}_hour"))
    return catalog.load_or_create_table("floor.telemetry", schema, partition_spec=spec)


def bench_load(tmp: Path) -> list[str]:
    import pyarrow.parquet as pq

    from assets.bronze_telemetry import load_hour_range, load_or_create_hourly_table
    from assets.contracts import file_drop_contracts
    from assets.drop_ledger import LEDGER_SCHEMA, LEDGER_TABLE
    from assets.drop_protocol import drop_prefix
    from demo.drop_producer import PART_NAME_FORMAT
    from resources.landing import LandingZone

    contract = file_drop_contracts()[DATASET]
    landing_root = tmp / "landing"
    with measured() as gen:
        hour_start, rows = write_big_drop(landing_root)
    landing = LandingZone(root=str(landing_root))
    part = landing_root / drop_prefix(DATASET, hour_start) / PART_NAME_FORMAT.format(index=0)

    # Warm-up: pyiceberg's write path imported and exercised once, outside the figures.
    warm_catalog = fresh_catalog(tmp / "warm")
    floor_table(warm_catalog, contract).append(pq.read_table(part).slice(0, 1000))

    platforms, floors = [], []
    for attempt in range(LOAD_REPEATS):
        # Tables (and the ledger) exist before the timed block, as in steady state: only the load is timed.
        catalog = fresh_catalog(tmp / f"platform-{attempt}")
        load_or_create_hourly_table(catalog, contract)
        catalog.load_or_create_table(LEDGER_TABLE, LEDGER_SCHEMA)
        with measured() as m:
            stats = load_hour_range(contract, landing, catalog, [hour_start], f"bench-{attempt}")
        if stats["rows_out"] != rows:
            raise RuntimeError(f"platform loaded {stats['rows_out']} rows, expected {rows}")
        platforms.append(m)

        target = floor_table(fresh_catalog(tmp / f"floor-{attempt}"), contract)
        with measured() as m:
            target.append(pq.read_table(part))
        floors.append(m)

    platform = sorted(platforms, key=lambda m: m.seconds)[LOAD_REPEATS // 2]
    floor = sorted(floors, key=lambda m: m.seconds)[LOAD_REPEATS // 2]
    ratio = platform.seconds / floor.seconds
    return [
        f"load drop: generated {rows} rows for {hour_start:%Y-%m-%d %H:00} (scale {LOAD_SCALE:g}) and wrote the "
        f"drop ({part.stat().st_size / 2**20:.1f} MiB parquet) in {gen.seconds:.1f} s",
        report(
            f"verified drop load, 1 hour, {rows} rows (median of {LOAD_REPEATS})",
            platform,
            floor,
            "pyarrow read + pyiceberg append",
        ),
        f"  rows/s: platform {rows / platform.seconds:,.0f} | floor {rows / floor.seconds:,.0f} | "
        f"verification adds {100 * (ratio - 1):.0f}% (target < {100 * (VERIFICATION_TARGET - 1):.0f}%): "
        f"{ratio < VERIFICATION_TARGET}",
        "  runs (s): platform " + ", ".join(f"{m.seconds:.2f}" for m in platforms),
        "            floor    " + ", ".join(f"{m.seconds:.2f}" for m in floors),
        *load_breakdown(landing, contract, hour_start, tmp / "breakdown"),
    ]


def stopwatch(into: dict[str, float]) -> Callable[[str], AbstractContextManager[None]]:
    """`with timed("step"):` adds the block's wall time to `into["step"]`."""

    @contextmanager
    def timed(step: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            into[step] = into.get(step, 0.0) + time.perf_counter() - began

    return timed


def load_breakdown(landing, contract, hour_start: datetime, folder: Path) -> list[str]:
    """Each step of `load_hour_range` (and of the floor) on its own, on the same drop: median seconds."""
    import hashlib
    import io

    import pyarrow.parquet as pq

    from assets.bronze_telemetry import load_or_create_hourly_table, time_range_filter
    from assets.contracts import conform_to_contract
    from assets.drop_ledger import LEDGER_SCHEMA, LEDGER_TABLE, LoadedDrop, record_loaded_drops
    from assets.drop_protocol import READY_NAME, drop_prefix, partition_key
    from assets.drop_verification import read_manifest
    from demo.drop_producer import PART_NAME_FORMAT

    prefix = drop_prefix(DATASET, hour_start)
    name = PART_NAME_FORMAT.format(index=0)
    sort_keys = [("vehicle_id", "ascending"), (contract.time_column, "ascending")]
    part = Path(landing.uri(prefix + name))
    runs: list[dict[str, float]] = []
    for attempt in range(LOAD_REPEATS):
        steps: dict[str, float] = {}
        timed = stopwatch(steps)
        catalog = fresh_catalog(folder / f"overwrite-{attempt}")
        load_or_create_hourly_table(catalog, contract)
        catalog.load_or_create_table(LEDGER_TABLE, LEDGER_SCHEMA)
        with timed("table load"):
            target = load_or_create_hourly_table(catalog, contract)
        with timed("ready+manifest+listing"):
            landing.exists(prefix + READY_NAME)
            _, md5 = read_manifest(landing, prefix)
            landing.list_keys(prefix)
        with timed("read bytes"):
            data = landing.read_bytes(prefix + name)
        with timed("sha256"):
            hashlib.sha256(data).hexdigest()
        with timed("parquet parse"):
            rows = pq.read_table(io.BytesIO(data))
        with timed("conform"):
            rows = conform_to_contract(rows, contract, "breakdown")
        with timed("concat"):
            rows = pa.concat_tables([pa.concat_tables([rows])])  # per drop, then per write group
        with timed("checksum: sort"):
            ordered = rows.sort_by(sort_keys).combine_chunks()
        with timed("checksum: IPC+sha256"):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, ordered.schema) as writer:
                writer.write_table(ordered)
            hashlib.sha256(sink.getvalue()).hexdigest()
        with timed("iceberg overwrite"), target.transaction() as tx:
            window = time_range_filter(contract.time_column, hour_start, hour_start + timedelta(hours=1))
            tx.overwrite(rows, overwrite_filter=window)
        with timed("refresh"):
            snapshot = target.refresh().current_snapshot().snapshot_id
        with timed("ledger append"):
            drop = LoadedDrop(DATASET, prefix, md5, partition_key(hour_start), rows.num_rows)
            record_loaded_drops(catalog, [drop], "breakdown", snapshot)
        appended = floor_table(fresh_catalog(folder / f"append-{attempt}"), contract)
        with timed("floor: parquet read"):
            floor_rows = pq.read_table(part)
        with timed("floor: append"):
            appended.append(floor_rows)
        runs.append(steps)

    median = {step: statistics.median(run[step] for run in runs) for step in runs[0]}
    platform_sum = sum(v for k, v in median.items() if not k.startswith("floor"))
    floor_sum = median["floor: parquet read"] + median["floor: append"]
    return [
        f"  step breakdown (median of {LOAD_REPEATS}, ms): "
        + ", ".join(f"{step} {seconds * 1000:.0f}" for step, seconds in median.items()),
        f"  steps sum: platform {platform_sum * 1000:.0f} ms, floor {floor_sum * 1000:.0f} ms; "
        f"extra {100 * (platform_sum / floor_sum - 1):.0f}%",
    ]


def main(profile: bool = False) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="strata-bench-drops-") as tmp:
        lines = bench_sensor(Path(tmp) / "sensor", profile)
        lines += bench_load(Path(tmp) / "load")
    return lines
