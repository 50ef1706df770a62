"""File drops at scale: the READY-marker sensor over a big S3 landing zone, and drop verification.

Sensor (moto's S3 server in its own process on 127.0.0.1): 10,000 READY hourly drops of 10 objects
each plus a few drops without `_READY` (> 100,000 objects). Figure A drains that backlog from an
empty cursor and ledger: the sensor lists a bounded number of objects per tick, so it takes several
ticks, each reported, until all 10,000 drops are requested; figure B is the next tick, with A's
cursor, after 10 new drops landed. Floor: the raw boto3 ListObjectsV2 listing of the same keys (A: the whole
dataset prefix; B: from the `start_after` key of A's cursor) with no grouping, ledger or Dagster.
The filler's drops are protocol-complete (valid manifests whose sha256 match the part files), but
their rows are a tiny fixed table: the sensor never reads them. Through HTTP moto stores only ~250-300
PUT/s (~6.5 min for 100k objects), so by default the server process puts the history into its own
backend before serving (`seed_and_serve`, ~7 s); `main(api_fill=True)` PUTs it with boto3 instead.
The 10 new drops of tick B always go through the S3 API.

Verification: one hour drop of ~1M realistic rows (the generator at scale 24). Platform:
`load_hour_range` (sha256, parse, row count, contract, checksum of the file hashes, Iceberg overwrite,
ledger append).
Floor: pyarrow reads the same parquet file and `Table.append`s it to an Iceberg table with the same
schema and hour partition spec, in the same process.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import psutil
import pyarrow as pa

from tests.benchmarks.measure import Measurement, measured, report

DATASET = "telemetry"
ROOT = "landing/"  # the landing zone's prefix in the bucket
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
LOAD_REPEATS = 7
VERIFICATION_TARGET = 1.30


# --- moto S3 server outside pytest ------------------------------------------------------------------


REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_LOG_TAIL = 2000
# Seeding 100k objects in the server process takes ~20 s before it answers.
SEEDED_STARTUP_TIMEOUT_S = 300.0
SEED_AND_SERVE = "import sys; from tests.benchmarks.bench_drops import seed_and_serve; seed_and_serve(*sys.argv[1:])"


@contextmanager
def moto_server(seed_bucket: str | None, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """moto's S3 server in its own process on a free 127.0.0.1 port, as `tests/s3_server.py` starts it;
    (endpoint URL, process). With `seed_bucket`, the process first creates that bucket and puts the
    history into its own S3 backend (`seed_and_serve`), then serves it."""
    from tests.s3_server import HOST, PORT_ATTEMPTS, STARTUP_TIMEOUT_S, _free_port, _stop

    for _ in range(PORT_ATTEMPTS):
        port = _free_port()
        if seed_bucket is None:
            command = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
        else:
            command = [sys.executable, "-c", SEED_AND_SERVE, HOST, str(port), seed_bucket]
        timeout = STARTUP_TIMEOUT_S if seed_bucket is None else SEEDED_STARTUP_TIMEOUT_S
        process = start_server(command, f"http://{HOST}:{port}/", timeout, log)
        if process is not None:
            break
    else:
        raise RuntimeError(f"moto server failed to start on {PORT_ATTEMPTS} free ports: {log_tail(log)}")
    try:
        yield f"http://{HOST}:{port}", process
    finally:
        _stop(process)


def start_server(command: list[str], url: str, timeout: float, log: Path) -> subprocess.Popen | None:
    """Start the server and wait until `url` answers; None if its port was taken (retry on another)."""
    from tests.s3_server import _answers, _stop

    with log.open("ab") as stderr:  # werkzeug logs every request: a file, not a pipe nobody reads
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                if "Address already in use" in log_tail(log):
                    return None
                raise RuntimeError(f"moto server exited with code {process.returncode}: {log_tail(log)}")
            if _answers(url):
                return process
            time.sleep(0.1)
        raise RuntimeError(f"moto server at {url} did not answer within {timeout:.0f} s: {log_tail(log)}")
    except BaseException:
        _stop(process)
        raise


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-SERVER_LOG_TAIL:] if log.exists() else ""


def seed_and_serve(host: str, port: str, bucket: str) -> None:
    """Entry point of the seeded server process: the history put straight into moto's S3 backend
    (the same `put_object` its HTTP handler calls, with the CRC32 checksum a boto3 PUT stores), then
    `moto.server` serving it. Through HTTP, moto accepts only ~250-300 PUT/s on this kind of machine."""
    from moto.core import DEFAULT_ACCOUNT_ID  # the account moto maps the fake credentials to
    from moto.s3.models import s3_backends
    from moto.s3.utils import compute_checksum
    from moto.server import main as serve

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(bucket, "us-east-1")
    parts = tiny_parts()
    for hour, ready in history_drops():
        for key, data in drop_objects(hour, parts, ready):
            checksum = compute_checksum(data, "CRC32").decode()
            backend.put_object(bucket, ROOT + key, data, checksum_value=checksum).checksum_algorithm = "CRC32"
    serve(["-H", host, "-p", port])


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
    from assets.bronze.contracts import file_drop_contracts
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
    from assets.drops.protocol import MANIFEST_NAME, READY_NAME, drop_prefix
    from demo.drop_producer import build_manifest

    hour_start = SENSOR_START + timedelta(hours=hour)
    prefix = drop_prefix(DATASET, hour_start)
    objects = [(prefix + name, data) for name, (data, _) in parts.items()]
    manifest = build_manifest(DATASET, hour_start, parts, schema_version=1)  # its partition makes the etag unique
    objects.append((prefix + MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode()))
    if ready:
        objects.append((prefix + READY_NAME, b""))
    return objects


def history_drops() -> list[tuple[int, bool]]:
    """(hour index, READY?) of the drops in the landing zone before the first tick."""
    return [(h, True) for h in range(READY_DROPS)] + [
        (INCOMPLETE_FIRST_HOUR + i, False) for i in range(INCOMPLETE_DROPS)
    ]


def upload_drops(client, bucket: str, drops: list[tuple[int, bool]]) -> int:
    """PUT the drops (hour, ready) with a thread pool, one drop per task in protocol order; return objects."""
    parts = tiny_parts()

    def put(drop: tuple[int, bool]) -> int:
        objects = drop_objects(drop[0], parts, drop[1])
        for key, data in objects:
            client.put_object(Bucket=bucket, Key=ROOT + key, Body=data)
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


@contextmanager
def cpu_split(server: psutil.Process) -> Iterator[dict[str, float]]:
    """CPU seconds used by the moto server and by this process while the block runs."""
    me = psutil.Process()
    server_before, me_before = sum(server.cpu_times()[:2]), sum(me.cpu_times()[:2])
    split: dict[str, float] = {}
    try:
        yield split
    finally:
        split["server"] = sum(server.cpu_times()[:2]) - server_before
        split["client"] = sum(me.cpu_times()[:2]) - me_before


def bench_sensor(tmp: Path, profile: bool, api_fill: bool) -> list[str]:
    from assets.bronze.telemetry import build_telemetry_asset
    from assets.drops.ledger import loaded_drop_versions
    from assets.partitions import hourly_partitions
    from resources.iceberg import IcebergCatalog
    from resources.landing import LandingZone
    from sensors.drop_sensor import SensorCursor, build_drop_sensor

    tmp.mkdir(parents=True, exist_ok=True)
    bucket = f"strata-bench-{uuid.uuid4().hex[:12]}"
    prefix = f"{ROOT}{DATASET}/"
    with fake_aws_environment(), ExitStack() as stack:
        began = time.perf_counter()
        endpoint, process = stack.enter_context(moto_server(None if api_fill else bucket, tmp / "moto.log"))
        server = psutil.Process(process.pid)
        filler = s3_client(endpoint, max_pool_connections=FILL_POOL_CONNECTIONS)
        if api_fill:
            filler.create_bucket(Bucket=bucket)
            upload_drops(filler, bucket, history_drops())
        fill_seconds = time.perf_counter() - began
        fill_how = f"PUT with boto3 ({FILL_THREADS} threads)" if api_fill else "put into moto's backend in-process"

        landing = LandingZone(root=f"s3://{bucket}/{ROOT.rstrip('/')}", s3_endpoint_url=endpoint)
        iceberg = IcebergCatalog(uri=f"sqlite:///{tmp / 'catalog.db'}", warehouse=f"file://{tmp / 'warehouse'}")
        asset = build_telemetry_asset(hourly_partitions(SENSOR_START.date()))
        sensor = build_drop_sensor(DATASET, asset)
        instance = stack.enter_context(dg.DagsterInstance.ephemeral())
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

        with cpu_split(server) as floor_a_cpu:
            floor_a, listed_a = list_floor(floor_client, bucket, prefix)
        # The sensor lists a bounded number of objects per tick and resumes: drain the backlog tick by
        # tick. Figure A is the whole drain (all 10,000 drops requested); each tick is also reported.
        tick_seconds: list[float] = []
        requested = 0
        cursor = None
        with cpu_split(server) as tick_a_cpu, measured() as tick_a:
            while True:
                began_tick = time.perf_counter()
                result = tick(cursor)
                tick_seconds.append(time.perf_counter() - began_tick)
                requested += len(result.run_requests)
                cursor = result.cursor
                if not result.run_requests:
                    break
        first = result
        if requested != READY_DROPS:
            raise RuntimeError(f"the drain requested {requested} drops, expected {READY_DROPS}")
        profile_lines = profile_tick(lambda: tick(None)) if profile else []

        upload_drops(filler, bucket, [(READY_DROPS + i, True) for i in range(NEW_DROPS)])
        start_after = SensorCursor.parse(first.cursor).list_after
        with cpu_split(server) as floor_b_cpu:
            floor_b, listed_b = list_floor(floor_client, bucket, prefix, ROOT + start_after)
        with cpu_split(server) as tick_b_cpu, measured() as tick_b:
            second = tick(first.cursor)
        if len(second.run_requests) != NEW_DROPS:
            raise RuntimeError(f"second tick requested {len(second.run_requests)} drops, expected {NEW_DROPS}")
        pages_a, pages_b = -(-listed_a // LIST_PAGE_SIZE), -(-listed_b // LIST_PAGE_SIZE)
        parts = tick_parts(asset, iceberg)

    def cpu(split: dict[str, float]) -> str:
        return f"CPU: moto server {split['server']:.2f} s, this process {split['client']:.2f} s"

    return [
        f"sensor fill: {listed_a} objects ({READY_DROPS} READY drops x {PARTS_PER_DROP + 2} objects + "
        f"{INCOMPLETE_DROPS} drops without _READY) {fill_how}, moto started, in {fill_seconds:.1f} s "
        "(not in the figures)",
        f"sensor warm-up (imports, S3 clients, empty ledger read; not in the figures): {warm.seconds:.1f} s",
        report(
            f"sensor drain A, {listed_a} objects in {pages_a} pages -> {requested} run requests "
            f"in {len(tick_seconds)} ticks (the last one finds nothing new)",
            tick_a,
            floor_a,
            "boto3 ListObjectsV2 of the same prefix",
        ),
        f"  ticks: first {tick_seconds[0]:.2f} s, slowest {max(tick_seconds):.2f} s; slowest tick < "
        f"{TICK_A_TARGET_S:.0f} s target: {max(tick_seconds) < TICK_A_TARGET_S} (Dagster's timeout is 60 s) | "
        f"drain {cpu(tick_a_cpu)} | floor {cpu(floor_a_cpu)}",
        f"  tick A without the listing (same keys in memory): {parts}",
        report(
            f"sensor tick B, next tick, {listed_b} objects in {pages_b} pages after '{start_after}' -> "
            f"{len(second.run_requests)} run requests",
            tick_b,
            floor_b,
            "boto3 ListObjectsV2 with the same StartAfter",
        ),
        f"  tick B {tick_b.seconds:.3f} s (floor {floor_b.seconds:.3f} s) < {TICK_B_TARGET_S:.0f} s target: "
        f"{tick_b.seconds < TICK_B_TARGET_S} | tick {cpu(tick_b_cpu)} | floor {cpu(floor_b_cpu)}",
        *profile_lines,
    ]


def tick_parts(asset: dg.AssetsDefinition, iceberg) -> str:
    """The tick's work after the listing, timed step by step on the same 100k keys held in memory."""
    from datetime import UTC

    from assets.drops.ledger import loaded_drop_versions
    from resources.landing import LandedObject
    from sensors.drop_sensor import SensorCursor, group_drops, plan_tick

    modified = datetime.now(UTC).isoformat()
    parts = tiny_parts()
    objects = sorted(
        (
            LandedObject(key, len(data), hashlib.md5(data, usedforsecurity=False).hexdigest(), modified)
            for hour, ready in history_drops()
            for key, data in drop_objects(hour, parts, ready)
        ),
        key=lambda o: o.key,
    )
    steps: dict[str, float] = {}
    timed = stopwatch(steps)
    with timed("group_drops"):
        listing = group_drops(objects)
    with timed("ledger read"):
        loaded = loaded_drop_versions(iceberg, DATASET)
    with timed("get_partition_keys"):
        keys = asset.partitions_def.get_partition_keys()
    with timed("plan_tick (incl. get_partition_keys and RunRequests)"):
        plan = plan_tick(DATASET, listing, SensorCursor(), loaded, asset.partitions_def, asset.key)
    with timed("SensorResult+cursor"):
        dg.SensorResult(run_requests=plan.requests, cursor=plan.cursor.serialize())
    summary = ", ".join(f"{step} {seconds:.3f} s" for step, seconds in steps.items())
    return f"{summary}; {len(keys)} partition keys, {len(plan.requests)} requests"


def profile_tick(run: Callable[[], object], top: int = 15) -> list[str]:
    """cProfile of one more first tick: the functions with the most time of their own (tottime)."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(run)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return ["  profile of tick A (own time):", *("    " + line for line in out.getvalue().splitlines() if line)]


# --- benchmark 2: verification + load vs a plain append ---------------------------------------------


def write_big_drop(landing_root: Path) -> tuple[datetime, int]:
    """One hour of realistic telemetry (~1M rows) written as one drop; return (hour start, rows)."""
    from demo.drop_producer import write_drop
    from demo.telemetry import hour_table
    from demo.world import HOUR_US, DemoConfig, from_us, to_us
    from demo.world_builder import build_world

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

    from assets.bronze.telemetry import load_or_create_hourly_table

    # Same Iceberg schema (field ids) as the platform's table: create one, copy its schema.
    schema = load_or_create_hourly_table(catalog, contract).schema()
    source_id = schema.find_field(contract.time_column).field_id
    spec = PartitionSpec(PartitionField(source_id, 1000, HourTransform(), f"{contract.time_column}_hour"))
    return catalog.load_or_create_table("floor.telemetry", schema, partition_spec=spec)


def bench_load(tmp: Path) -> list[str]:
    import pyarrow.parquet as pq

    from assets.bronze.contracts import file_drop_contracts
    from assets.bronze.telemetry import load_hour_range, load_or_create_hourly_table
    from assets.drops.ledger import LEDGER_SCHEMA, LEDGER_TABLE
    from assets.drops.protocol import drop_prefix
    from demo.drop_producer import PART_NAME_FORMAT
    from resources.landing import LandingZone

    contract = file_drop_contracts()[DATASET]
    landing_root = tmp / "landing"
    with measured() as gen:
        hour_start, rows = write_big_drop(landing_root)
    landing = LandingZone(root=str(landing_root))
    part = landing_root / drop_prefix(DATASET, hour_start) / PART_NAME_FORMAT.format(index=0)

    # Warm-up outside the figures: one platform load and one floor append, so that imports and first-call
    # costs (pyiceberg's write path, the verification code) land in neither figure.
    warm_catalog = fresh_catalog(tmp / "warm")
    load_hour_range(contract, landing, warm_catalog, [hour_start], "bench-warm-up")
    floor_table(warm_catalog, contract).append(pq.read_table(part))

    platforms, floors = [], []
    for attempt in range(LOAD_REPEATS):
        # Tables (and the ledger) exist before the timed block, as in steady state: only the load is timed.
        catalog = fresh_catalog(tmp / f"platform-{attempt}")
        load_or_create_hourly_table(catalog, contract)
        catalog.load_or_create_table(LEDGER_TABLE, LEDGER_SCHEMA)
        with measured() as m:
            loaded = load_hour_range(contract, landing, catalog, [hour_start], f"bench-{attempt}")
        if loaded.rows_out != rows:
            raise RuntimeError(f"platform loaded {loaded.rows_out} rows, expected {rows}")
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

    from assets.bronze.conform import conform_to_contract
    from assets.bronze.telemetry import load_or_create_hourly_table, time_range_filter
    from assets.drops.ledger import LEDGER_SCHEMA, LEDGER_TABLE, LoadedDrop, record_loaded_drops
    from assets.drops.protocol import READY_NAME, drop_prefix, partition_key
    from assets.drops.verification import read_manifest
    from audit.metadata import combine_checksums
    from demo.drop_producer import PART_NAME_FORMAT

    prefix = drop_prefix(DATASET, hour_start)
    name = PART_NAME_FORMAT.format(index=0)
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
        with timed("checksum (combine file sha256s)"):
            combine_checksums([hashlib.sha256(data).hexdigest()])
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


def main(profile: bool = False, api_fill: bool = False) -> list[str]:
    """Both benchmarks. `profile`: add a cProfile of tick A; `api_fill`: PUT the 100k objects through
    moto's S3 API instead of seeding its backend (same figures, ~6 min more)."""
    with tempfile.TemporaryDirectory(prefix="strata-bench-drops-") as tmp:
        lines = bench_sensor(Path(tmp) / "sensor", profile, api_fill)
        lines += bench_load(Path(tmp) / "load")
    return lines
