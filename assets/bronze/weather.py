"""Bronze weather forecasts: hourly forecasts per location from an HTTP API, upserted by (location_id, ts).

Every 15 minutes (jobs/schedules.py) the asset asks the weather API (resources/weather_api.py) for
`history_hours` before the current hour and `forecast_hours` from it on, for every configured location,
and upserts the answer into `bronze.weather_forecasts`. Rows whose values did not change since the last
fetch are left alone, so a repeated fetch writes nothing and a changed forecast replaces its row: no
(location, hour) is ever held twice.

A table that is missing, or whose newest hour is older than that window, is caught up first: the fetch
then starts at the newest hour it holds, or at the platform's first day (`catch_up_from`, the first
partition day) for a new table, so every past day's features have their weather. The hours are asked
for in chunks of `catch_up_chunk_hours` and each chunk is committed on its own, so a catch-up cut short
by the API resumes from where it stopped.

What the API gets wrong is sorted into three kinds:
- transient (timeouts, 429, 5xx, truncated JSON): retried inside the request by the resource;
- a location's answer is missing or has values outside the contract's ranges: that location is not
  loaded, the others are, and the materialization names the failed locations and why;
- the payload is malformed (a field missing or of the wrong type): the batch is refused, nothing is
  loaded, and the run fails naming the location and field, without retry (it would answer the same).
"""

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg
import pyarrow as pa

from audit.metadata import audit_metadata, table_checksum
from resources.iceberg import IcebergCatalog, commit_with_retry
from resources.weather_api import ApiResponse, WeatherApi, WeatherApiRefused, WeatherApiUnavailable

if TYPE_CHECKING:
    from pyiceberg.table import Table

WEATHER_TABLE = "bronze.weather_forecasts"
KEY_COLUMNS = ["location_id", "ts"]
VALUE_COLUMNS = ["temperature_c", "precipitation_mm", "wind_kmh"]
WEATHER_SCHEMA = pa.schema(
    [
        pa.field("location_id", pa.int64(), nullable=False),
        pa.field("ts", pa.timestamp("us"), nullable=False),
        pa.field("temperature_c", pa.float64(), nullable=False),
        pa.field("precipitation_mm", pa.float64(), nullable=False),
        pa.field("wind_kmh", pa.float64(), nullable=False),
        pa.field("fetched_at", pa.timestamp("us"), nullable=False),
    ]
)
# The contract's plausible ranges (inclusive): a value outside is a provider error, not weather.
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "temperature_c": (-60.0, 60.0),
    "precipitation_mm": (0.0, 500.0),
    "wind_kmh": (0.0, 400.0),
}


class MalformedPayload(Exception):
    """The payload breaks the API's structure: refused whole, naming the location and field."""

    def __init__(self, location: object, field_name: str, problem: str) -> None:
        where = f"location {location}" if location is not None else "the response"
        super().__init__(f"{where}, field {field_name}: {problem}")
        self.location = location
        self.field_name = field_name


@dataclass
class ParsedForecasts:
    """The rows of the locations that passed, and why each other requested location did not."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # location_id -> reason


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_ts(value: object, location: object) -> datetime:
    """An ISO hour (`2026-10-01T05:00:00Z`, or with an offset) as naive UTC."""
    if not isinstance(value, str):
        raise MalformedPayload(location, "ts", f"{value!r} is not an ISO timestamp string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedPayload(location, "ts", f"{value!r} is not an ISO timestamp") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def parse_forecasts(
    payload: object, requested: list[int], start: datetime, end: datetime, fetched_at: datetime
) -> ParsedForecasts:
    """Check a forecast response against the contract; raises `MalformedPayload` for a structural error.

    A requested location absent from the response, or with a value out of range, an hour outside
    [start, end) or an hour twice, is failed with its reason; the others' rows are returned.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("forecasts"), list):
        raise MalformedPayload(None, "forecasts", "expected an object with a list 'forecasts'")
    result = ParsedForecasts()
    seen: set[int] = set()
    for entry in payload["forecasts"]:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("location_id"), int)
            or isinstance(entry.get("location_id"), bool)
        ):
            raise MalformedPayload(None, "location_id", f"expected an integer in every forecast, got {entry!r:.80}")
        location = entry["location_id"]
        hourly = entry.get("hourly")
        if not isinstance(hourly, list):
            raise MalformedPayload(location, "hourly", "expected a list of hours")
        rows, problem, hours = [], None, set()
        for hour in hourly:
            if not isinstance(hour, dict):
                raise MalformedPayload(location, "hourly", f"expected an object per hour, got {hour!r:.80}")
            ts = parse_ts(hour.get("ts"), location)
            row: dict[str, Any] = {"location_id": location, "ts": ts}
            for name in VALUE_COLUMNS:
                value = hour.get(name)
                if not is_number(value):
                    raise MalformedPayload(location, name, f"{value!r} at {ts:%Y-%m-%dT%H:%M} is not a number")
                low, high = VALUE_RANGES[name]
                if problem is None and not low <= value <= high:
                    problem = f"{name} {value} at {ts:%Y-%m-%dT%H:%M} outside [{low:g}, {high:g}]"
                row[name] = float(value)
            if problem is None and not start <= ts < end:
                window = f"[{start:%Y-%m-%dT%H:%M}, {end:%Y-%m-%dT%H:%M})"
                problem = f"ts {ts:%Y-%m-%dT%H:%M} outside the requested window {window}"
            if problem is None and ts in hours:
                problem = f"ts {ts:%Y-%m-%dT%H:%M} appears twice"
            hours.add(ts)
            rows.append({**row, "fetched_at": fetched_at})
        if location not in requested:
            continue  # not asked for: not ours to load
        seen.add(location)
        if problem is not None:
            result.failed[location] = problem
        elif not rows:
            result.failed[location] = "no hours in the response"
        else:
            result.rows.extend(rows)
    for location in requested:
        if location not in seen:
            result.failed[location] = "missing from the response"
    return result


def fetch_window(as_of: datetime, history_hours: int, forecast_hours: int) -> tuple[datetime, datetime]:
    """[start, end) of whole hours around the hour of `as_of` (naive UTC)."""
    hour = as_of.replace(minute=0, second=0, microsecond=0)
    return hour - timedelta(hours=history_hours), hour + timedelta(hours=forecast_hours)


def catch_up_start(newest: datetime | None, first_day: date | None, window_start: datetime) -> datetime:
    """Where a fetch starts: the regular window's start, or earlier when the table lags behind it.

    A table without rows starts at `first_day`; one whose newest hour is before the window starts at that
    hour (not after it: re-asking one hour costs nothing, an upsert that finds it unchanged writes nothing).
    Never before `first_day`, and without a `first_day` there is no catch-up.
    """
    if first_day is None:
        return window_start
    first = datetime.combine(first_day, time())
    if newest is not None and newest >= window_start:
        return window_start
    return min(window_start, max(newest or first, first))


def chunked(start: datetime, end: datetime, chunk_hours: int) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive windows of at most `chunk_hours` whole hours."""
    step = timedelta(hours=max(1, chunk_hours))
    chunks, at = [], start
    while at < end:
        chunks.append((at, min(at + step, end)))
        at += step
    return chunks


def newest_hour(table: "Table | None") -> datetime | None:
    """The latest `ts` the table holds, or None for a missing or empty table."""
    import pyarrow.compute as pc

    if table is None or table.current_snapshot() is None:
        return None
    newest = pc.max(table.scan(selected_fields=("ts",)).to_arrow().column("ts")).as_py()
    return newest


def changed_rows(incoming: pa.Table, existing: pa.Table) -> pa.Table:
    """The incoming rows that are new or whose values differ from the stored ones (fetched_at aside)."""
    if existing.num_rows == 0 or incoming.num_rows == 0:
        return incoming
    stored = existing.select([*KEY_COLUMNS, *VALUE_COLUMNS]).rename_columns(
        [*KEY_COLUMNS, *(f"stored_{c}" for c in VALUE_COLUMNS)]
    )
    joined = incoming.join(stored, keys=KEY_COLUMNS, join_type="left outer")
    import pyarrow.compute as pc

    differs = pc.is_null(joined.column("stored_temperature_c"))
    for name in VALUE_COLUMNS:
        differs = pc.or_(
            differs, pc.fill_null(pc.not_equal(joined.column(name), joined.column(f"stored_{name}")), True)
        )
    return joined.filter(differs).select(WEATHER_SCHEMA.names).cast(WEATHER_SCHEMA)


def stored_rows(table: "Table", start: datetime, end: datetime) -> pa.Table:
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    return table.scan(
        row_filter=And(GreaterThanOrEqual("ts", start.isoformat()), LessThan("ts", end.isoformat()))
    ).to_arrow()


class WeatherFetchConfig(dg.Config):
    """Which hours to fetch: around `as_of` (ISO, naive UTC; empty: now), caught up from the table's newest
    hour when it lags behind; or exactly [start, end) (no catch-up) to re-fetch a past window."""

    as_of: str = ""
    start: str = ""
    end: str = ""


def requested_window(config: WeatherFetchConfig, api: WeatherApi, now: datetime) -> tuple[datetime, datetime]:
    if config.start or config.end:
        if not (config.start and config.end):
            raise dg.Failure("weather fetch config: give both start and end, or neither", allow_retries=False)
        start, end = (
            datetime.fromisoformat(v).replace(minute=0, second=0, microsecond=0) for v in (config.start, config.end)
        )
        return start, end
    as_of = datetime.fromisoformat(config.as_of) if config.as_of else now
    return fetch_window(as_of, api.history_hours, api.forecast_hours)


def batches(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), max(1, size))]


def fetch_chunk(
    api: WeatherApi, locations: list[int], start: datetime, end: datetime, fetched_at: datetime
) -> tuple[ParsedForecasts, list[ApiResponse]]:
    """The forecasts of every location for [start, end), in batches of locations; `MalformedPayload` refuses."""
    responses, parsed = [], ParsedForecasts()
    hours = int((end - start).total_seconds() // 3600)
    for batch in batches(locations, api.batch_size):
        response = api.forecasts(batch, start, hours)
        responses.append(response)
        part = parse_forecasts(response.payload, batch, start, end, fetched_at)
        parsed.rows.extend(part.rows)
        for location, reason in part.failed.items():
            parsed.failed.setdefault(location, reason)  # the first reason of a location over the chunks
    return parsed, responses


def row_keys(rows: pa.Table) -> pa.Array:
    """(location_id, ts) of each row as one string, to test membership of a key in another table."""
    import pyarrow.compute as pc

    as_text = [pc.cast(rows.column(name), pa.string()) for name in KEY_COLUMNS]
    return pc.binary_join_element_wise(*as_text, "|").combine_chunks()


def upsert_chunk(table: "Table", incoming: pa.Table, start: datetime, end: datetime) -> tuple[int, int]:
    """(inserted, updated): the new and changed rows of [start, end) in one commit; none, no commit.

    New keys are appended and only changed ones go through pyiceberg's upsert (slow for large deltas), so
    a catch-up of weeks of fresh hours costs an append.
    """
    import pyarrow.compute as pc

    def write(current: "Table") -> tuple[int, int]:
        stored = stored_rows(current, start, end)
        delta = changed_rows(incoming, stored)
        if delta.num_rows == 0:
            return 0, 0
        known = pc.is_in(row_keys(delta), value_set=row_keys(stored))
        new, changed = delta.filter(pc.invert(known)), delta.filter(known)
        with current.transaction() as transaction:
            if new.num_rows:
                transaction.append(new)
            if changed.num_rows:
                transaction.upsert(changed, join_cols=KEY_COLUMNS)
        return new.num_rows, changed.num_rows

    return commit_with_retry(table, write)


@dg.asset(
    key=["bronze", "weather_forecasts"],
    group_name="bronze",
    description=(
        "Hourly weather forecasts per location from the weather API, upserted by (location_id, ts); a table "
        "missing or behind is caught up from its newest hour (or the first partition day) in chunks."
    ),
    kinds={"iceberg", "python"},
)
def weather_forecasts(
    context: dg.AssetExecutionContext, config: WeatherFetchConfig, weather_api: WeatherApi, iceberg: IcebergCatalog
) -> dg.MaterializeResult:
    fetched_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    start, end = requested_window(config, weather_api, fetched_at)
    if int((end - start).total_seconds() // 3600) <= 0:
        raise dg.Failure(f"weather fetch window [{start}, {end}) holds no whole hour", allow_retries=False)
    table = iceberg.table_or_none(WEATHER_TABLE)
    window_start = start
    if not (config.start or config.end):
        first_day = date.fromisoformat(weather_api.catch_up_from) if weather_api.catch_up_from else None
        start = catch_up_start(newest_hour(table), first_day, window_start)
    chunks = chunked(start, end, weather_api.catch_up_chunk_hours)
    if start < window_start:
        context.log.info(f"weather: {WEATHER_TABLE} lags behind; catching up [{start}, {end}), {len(chunks)} chunk(s)")
    responses: list[ApiResponse] = []
    loaded: list[pa.Table] = []
    failed: dict[int, str] = {}
    inserted = updated = 0
    chunk_start, chunk_end = start, end
    try:
        locations, listing = weather_api.location_ids()
        if listing is not None:
            responses.append(listing)
        for chunk_start, chunk_end in chunks:
            parsed, chunk_responses = fetch_chunk(weather_api, locations, chunk_start, chunk_end, fetched_at)
            responses.extend(chunk_responses)
            for location, reason in parsed.failed.items():
                failed.setdefault(location, reason)
            if not parsed.rows:
                continue
            incoming = pa.Table.from_pylist(parsed.rows, schema=WEATHER_SCHEMA)
            if table is None:  # created with the first rows: a fetch that loads nothing leaves no table behind
                table = iceberg.load_or_create_table(WEATHER_TABLE, WEATHER_SCHEMA)
            chunk_inserted, chunk_updated = upsert_chunk(table, incoming, chunk_start, chunk_end)
            inserted, updated = inserted + chunk_inserted, updated + chunk_updated
            loaded.append(incoming)
    except MalformedPayload as error:
        if loaded:  # a catch-up: the chunks before this one are committed, and the next fetch resumes after them
            raise dg.Failure(
                f"weather API payload refused, nothing of [{chunk_start:%Y-%m-%dT%H:%M}, {chunk_end:%Y-%m-%dT%H:%M}) "
                f"loaded into {WEATHER_TABLE} ({inserted + updated} row(s) of {len(loaded)} earlier chunk(s) kept): "
                f"{error}",
                allow_retries=False,
            ) from None
        raise dg.Failure(
            f"weather API payload refused, nothing loaded into {WEATHER_TABLE}: {error}", allow_retries=False
        ) from None
    except WeatherApiRefused as error:
        raise dg.Failure(str(error), allow_retries=False) from None
    except WeatherApiUnavailable as error:
        # transient to the last retry: the run fails and the op's retry policy (jobs/policies.py) may try again;
        # chunks committed before it stay, and the next fetch resumes after them
        raise dg.Failure(str(error)) from None
    if not loaded:
        raise dg.Failure(
            f"weather API gave no valid forecast for any of {len(locations)} locations; failed: {failed}",
            allow_retries=False,
        )
    incoming = pa.concat_tables(loaded)
    table = table.refresh()
    snapshot = table.current_snapshot()
    if failed:
        context.log.warning(f"weather: {len(failed)} location(s) not loaded: {failed}")
    retries = sum(r.retries for r in responses)
    return dg.MaterializeResult(
        metadata=audit_metadata(
            table_name=WEATHER_TABLE,
            uri=table.location(),
            rows_in=incoming.num_rows,
            rows_out=inserted + updated,
            table_row_count=int(snapshot.summary["total-records"]) if snapshot else 0,
            checksum=table_checksum(incoming.drop_columns(["fetched_at"]), KEY_COLUMNS),
            data_window=(f"{start:%Y-%m-%dT%H:%M}", f"{end:%Y-%m-%dT%H:%M}"),
            input_partitions=[],
            snapshot_id=snapshot.snapshot_id if snapshot else None,
            schema=WEATHER_SCHEMA,
            extra={
                "rows_inserted": inserted,
                "rows_updated": updated,
                "locations_requested": len(locations),
                "locations_loaded": len(locations) - len(failed),
                "failed_locations": dg.MetadataValue.json({str(k): v for k, v in sorted(failed.items())}),
                "catch_up_chunks": len(chunks) if start < window_start else 0,
                "api_requests": len(responses),
                "api_retries": retries,
                "api_response_ms": round(sum(r.response_ms for r in responses), 1),
                "api_response_max_ms": round(max(r.response_ms for r in responses), 1),
                "api_url": weather_api.base_url,
            },
        )
    )
