"""Weather ingestion against the demo weather API (a real HTTP server on 127.0.0.1), fault by fault.

Every case runs the real asset (httpx + stamina against demo/weather_api.py, Iceberg SqlCatalog under
tmp) and asserts the rows in Bronze, the metadata and, for refusals, the exact error text.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from assets.bronze.weather import (
    WEATHER_TABLE,
    MalformedPayload,
    catch_up_start,
    chunked,
    parse_forecasts,
    weather_forecasts,
)
from demo.weather_api import WeatherFaults, hourly_weather, serve_weather_api
from resources.iceberg import IcebergCatalog
from resources.secrets import build_secrets_resource
from resources.settings import load_settings
from resources.weather_api import WeatherApi, build_weather_api
from tests.conftest import TEST_START

SEED = 42
AS_OF = "2026-10-05T10:20:00"
START = datetime(2026, 10, 5, 8)  # two hours of history before 10:00, four of forecast from it
HOURS = 6
LOCATIONS = 50  # scale 1: 200 stations in clusters of 4
ALL_ROWS = LOCATIONS * HOURS


def api(settings, url: str, **overrides) -> WeatherApi:
    fields = dict(
        secrets=build_secrets_resource(settings),
        base_url=url,
        timeout_seconds=0.5,
        retry_wait_initial_seconds=0.05,
        retry_wait_max_seconds=0.2,
        history_hours=2,
        forecast_hours=4,
    )
    return WeatherApi(**{**fields, **overrides})


def fetch(settings, url: str, *, as_of: str = AS_OF, weather_api: WeatherApi | None = None, **overrides):
    return dg.materialize(
        [weather_forecasts],
        resources={
            "weather_api": weather_api or api(settings, url, **overrides),
            "iceberg": IcebergCatalog.from_settings(settings),
        },
        run_config={"ops": {"bronze__weather_forecasts": {"config": {"as_of": as_of}}}},
        raise_on_error=False,
    )


def bronze_rows(settings) -> pa.Table:
    table = IcebergCatalog.from_settings(settings).table_or_none(WEATHER_TABLE)
    if table is None:
        return pa.table({"location_id": pa.array([], pa.int64())})
    return table.scan().to_arrow().sort_by([("location_id", "ascending"), ("ts", "ascending")])


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [event] = result.get_asset_materialization_events()
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.user_failure_data.description


def expected_rows(locations: list[int]) -> list[tuple]:
    rows = []
    for location in locations:
        for offset in range(HOURS):
            hour = START + timedelta(hours=offset)
            w = hourly_weather(SEED, location, hour)
            rows.append((location, hour, w["temperature_c"], w["precipitation_mm"], w["wind_kmh"]))
    return rows


def as_tuples(table: pa.Table) -> list[tuple]:
    columns = ["location_id", "ts", "temperature_c", "precipitation_mm", "wind_kmh"]
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))


@pytest.fixture
def server():
    with serve_weather_api(seed=SEED, scale=1.0) as running:
        yield running


def test_a_clean_fetch_loads_every_location_and_hour_and_a_repeat_loads_nothing_twice(settings, server):
    result = fetch(settings, server.url)
    assert result.success
    assert as_tuples(bronze_rows(settings)) == expected_rows(list(range(1, LOCATIONS + 1)))
    first = metadata(result)
    assert (first["strata/rows_in"], first["strata/rows_inserted"], first["strata/rows_updated"]) == (300, 300, 0)
    assert (first["strata/api_requests"], first["strata/api_retries"], first["dagster/row_count"]) == (3, 0, 300)
    assert first["strata/failed_locations"] == {}
    assert first["strata/data_window"] == "[2026-10-05T08:00, 2026-10-05T14:00)"
    assert first["strata/api_response_ms"] > 0

    again = fetch(settings, server.url)
    assert again.success
    second = metadata(again)
    assert (second["strata/rows_inserted"], second["strata/rows_updated"], second["dagster/row_count"]) == (0, 0, 300)
    assert second["strata/snapshot_id"] == first["strata/snapshot_id"]  # nothing written: no new snapshot
    assert bronze_rows(settings).num_rows == ALL_ROWS


def test_a_changed_forecast_replaces_its_rows(settings, server):
    assert fetch(settings, server.url).success
    server.state.seed = SEED + 1  # the provider revises every forecast
    result = fetch(settings, server.url)
    assert (metadata(result)["strata/rows_inserted"], metadata(result)["strata/rows_updated"]) == (0, 300)
    rows = bronze_rows(settings)
    assert rows.num_rows == ALL_ROWS
    first = hourly_weather(SEED + 1, 1, START)
    assert as_tuples(rows)[0] == (1, START, first["temperature_c"], first["precipitation_mm"], first["wind_kmh"])


@pytest.mark.parametrize(
    ("faults", "retries"),
    [
        (WeatherFaults(timeout_requests=1, stall_seconds=1.5), 1),
        (WeatherFaults(server_error_requests=2), 2),
        (WeatherFaults(truncated_requests=1), 1),
    ],
    ids=["timeout", "5xx", "truncated-json"],
)
def test_transient_faults_are_retried_and_everything_loads(settings, server, faults, retries):
    server.state.faults = faults
    result = fetch(settings, server.url)
    assert result.success
    assert metadata(result)["strata/api_retries"] == retries
    assert as_tuples(bronze_rows(settings)) == expected_rows(list(range(1, LOCATIONS + 1)))


def test_a_429_waits_for_retry_after(settings, server):
    server.state.faults = WeatherFaults(rate_limited_requests=1, retry_after_seconds=1)
    began = time.monotonic()
    result = fetch(settings, server.url, retry_wait_max_seconds=0.05)  # backoff alone would wait < 0.1 s
    assert result.success
    assert time.monotonic() - began >= 1.0
    assert metadata(result)["strata/api_retries"] == 1
    assert bronze_rows(settings).num_rows == ALL_ROWS


def test_a_fault_that_outlasts_the_retries_fails_the_run_naming_it(settings, server):
    server.state.faults = WeatherFaults(truncated_requests=100)
    result = fetch(settings, server.url, retry_attempts=3)
    assert not result.success
    assert failure_text(result) == (
        "weather API /v1/forecast still failing after 3 attempt(s): TransientApiError: the body of 7762 bytes "
        "is not complete JSON (Unterminated string starting at: line 1 column 7760 (char 7759))"
    )
    assert bronze_rows(settings).num_rows == 0


def test_a_missing_location_is_named_and_the_others_load(settings, server):
    server.state.faults = WeatherFaults(missing_locations=[3, 41])
    result = fetch(settings, server.url)
    assert result.success
    assert metadata(result)["strata/failed_locations"] == {
        "3": "missing from the response",
        "41": "missing from the response",
    }
    assert metadata(result)["strata/locations_loaded"] == 48
    loaded = [i for i in range(1, LOCATIONS + 1) if i not in (3, 41)]
    assert as_tuples(bronze_rows(settings)) == expected_rows(loaded)


def test_out_of_range_values_fail_their_location_only(settings, server):
    server.state.faults = WeatherFaults(out_of_range_locations=[7])
    result = fetch(settings, server.url)
    assert result.success
    assert metadata(result)["strata/failed_locations"] == {
        "7": "temperature_c 71.5 at 2026-10-05T08:00 outside [-60, 60]"
    }
    assert as_tuples(bronze_rows(settings)) == expected_rows([i for i in range(1, LOCATIONS + 1) if i != 7])


def test_a_malformed_payload_is_refused_whole_naming_location_and_field(settings, server):
    server.state.faults = WeatherFaults(malformed_locations=[30])
    result = fetch(settings, server.url)
    assert not result.success
    assert failure_text(result) == (
        "weather API payload refused, nothing loaded into bronze.weather_forecasts: location 30, field "
        "precipitation_mm: 'n/a' at 2026-10-05T08:00 is not a number"
    )
    assert bronze_rows(settings).num_rows == 0  # the first batch (1-25) was valid: still nothing loaded
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.user_failure_data is not None  # a dg.Failure: retry policies skip it


def test_the_token_is_read_from_the_secret_at_use_and_never_shown(settings, server, monkeypatch):
    token = "weather-token-93c1f0"
    server.state.token = token
    refused = fetch(settings, server.url)
    assert not refused.success
    assert failure_text(refused).startswith("weather API /v1/locations refused the request: HTTP 401")

    monkeypatch.setenv("STRATA_SECRET_WEATHER__API_TOKEN", token)
    result = fetch(settings, server.url)
    assert result.success and bronze_rows(settings).num_rows == ALL_ROWS
    shown = (
        repr(metadata(result))
        + repr(api(settings, server.url).model_dump())
        + "".join(str(e.message) for e in result.all_events)
    )
    assert token not in shown


# --- catching up: a new or lagging table is filled from the platform's first day -------------------------


def configured_api(url: str, monkeypatch) -> WeatherApi:
    """The weather API as the platform builds it from the environment (catch-up from STRATA_START_DATE)."""
    monkeypatch.setenv("STRATA_WEATHER_URL", url)
    settings = load_settings()
    return build_weather_api(settings, build_secrets_resource(settings))


def every_hour(first: datetime, end: datetime) -> list[tuple]:
    hours = [first + timedelta(hours=h) for h in range(int((end - first).total_seconds() // 3600))]
    rows = []
    for location in range(1, LOCATIONS + 1):
        for hour in hours:
            w = hourly_weather(SEED, location, hour)
            rows.append((location, hour, w["temperature_c"], w["precipitation_mm"], w["wind_kmh"]))
    return rows


def test_a_new_table_is_caught_up_from_the_first_day_and_a_second_fetch_writes_nothing(settings, server, monkeypatch):
    """Start date 10 days before `as_of`: one fetch loads every hour of every location from the first day
    to the end of the forecast, in week-long chunks; the next one (same hour) commits nothing."""
    weather_api = configured_api(server.url, monkeypatch)
    assert weather_api.catch_up_from == TEST_START.isoformat()
    as_of = datetime.combine(TEST_START, datetime.min.time()) + timedelta(days=10, hours=10, minutes=20)
    result = fetch(settings, server.url, as_of=as_of.isoformat(), weather_api=weather_api)
    assert result.success
    first_hour, end = datetime.combine(TEST_START, datetime.min.time()), as_of.replace(minute=0) + timedelta(hours=48)
    expected = every_hour(first_hour, end)  # 298 hours x 50 locations
    assert len(expected) == 298 * LOCATIONS
    assert as_tuples(bronze_rows(settings)) == expected
    first = metadata(result)
    assert first["strata/catch_up_chunks"] == 2  # 168 + 130 hours
    assert first["strata/api_requests"] == 1 + 2 * 2  # the listing, then 2 batches of 25 per chunk
    assert (first["strata/rows_inserted"], first["strata/rows_updated"]) == (len(expected), 0)
    assert first["strata/data_window"] == f"[{first_hour:%Y-%m-%dT%H:%M}, {end:%Y-%m-%dT%H:%M})"

    again = fetch(settings, server.url, as_of=as_of.isoformat(), weather_api=weather_api)
    second = metadata(again)
    assert (second["strata/rows_inserted"], second["strata/rows_updated"], second["strata/catch_up_chunks"]) == (
        0, 0, 0)  # fmt: skip
    assert second["strata/data_window"] == f"[{as_of.replace(minute=0) - timedelta(hours=24):%Y-%m-%dT%H:%M}, " \
        f"{end:%Y-%m-%dT%H:%M})"  # fmt: skip
    assert second["strata/snapshot_id"] == first["strata/snapshot_id"]
    assert bronze_rows(settings).num_rows == len(expected)


def test_a_table_that_fell_behind_resumes_from_its_newest_hour(settings, server, monkeypatch):
    weather_api = configured_api(server.url, monkeypatch)
    day_3 = datetime.combine(TEST_START, datetime.min.time()) + timedelta(days=3, hours=10)
    assert fetch(settings, server.url, as_of=day_3.isoformat(), weather_api=weather_api).success
    newest = day_3 + timedelta(hours=47)  # the last forecast hour of that fetch
    day_10 = day_3 + timedelta(days=7)  # its window starts at day 9, 10:00: after the newest hour
    result = fetch(settings, server.url, as_of=day_10.isoformat(), weather_api=weather_api)
    assert result.success
    meta = metadata(result)
    end = day_10 + timedelta(hours=48)
    assert meta["strata/data_window"] == f"[{newest:%Y-%m-%dT%H:%M}, {end:%Y-%m-%dT%H:%M})"
    hours = int((end - newest).total_seconds() // 3600)
    assert meta["strata/catch_up_chunks"] == 2 and hours == 169
    assert (meta["strata/rows_inserted"], meta["strata/rows_updated"]) == ((hours - 1) * LOCATIONS, 0)
    assert as_tuples(bronze_rows(settings)) == every_hour(datetime.combine(TEST_START, datetime.min.time()), end)


def test_catch_up_starts_where_the_table_ends_never_before_the_first_day():
    window = datetime(2026, 10, 20, 9)
    first_day = TEST_START
    assert catch_up_start(None, first_day, window) == datetime(2026, 10, 1)  # a new table
    assert catch_up_start(datetime(2026, 10, 12, 5), first_day, window) == datetime(2026, 10, 12, 5)  # behind
    assert catch_up_start(datetime(2026, 10, 21, 3), first_day, window) == window  # up to date
    assert catch_up_start(datetime(2026, 9, 1), first_day, window) == datetime(2026, 10, 1)  # older than day one
    assert catch_up_start(None, None, window) == window  # no first day configured: no catch-up
    assert catch_up_start(None, date_after(window), window) == window  # a first day after the window


def date_after(moment: datetime):
    return (moment + timedelta(days=2)).date()


@given(st.integers(0, 2000), st.integers(1, 400))
def test_chunks_cover_the_window_exactly_once_in_bounded_pieces(hours, chunk_hours):
    start = datetime(2026, 10, 1)
    chunks = chunked(start, start + timedelta(hours=hours), chunk_hours)
    assert len(chunks) == -(-hours // chunk_hours)
    assert all(0 < (e - s).total_seconds() <= chunk_hours * 3600 for s, e in chunks)
    assert [s for s, _ in chunks[1:]] == [e for _, e in chunks[:-1]]  # contiguous: no gap, no overlap
    assert (chunks[0][0], chunks[-1][1]) == (start, start + timedelta(hours=hours)) if chunks else hours == 0


HOUR_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "ts": st.one_of(st.just("2026-10-05T08:00:00Z"), st.text(max_size=5), st.integers()),
        "temperature_c": st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans()),
        "precipitation_mm": st.one_of(st.floats(-10, 1000), st.integers(-5, 900)),
        "wind_kmh": st.one_of(st.floats(-10, 1000), st.none()),
    },
)
PAYLOADS = st.one_of(
    st.none(),
    st.lists(st.integers()),
    st.fixed_dictionaries(
        {
            "forecasts": st.lists(
                st.one_of(
                    st.fixed_dictionaries(
                        {"location_id": st.integers(0, 4), "hourly": st.lists(HOUR_FIELDS, max_size=3)}
                    ),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                ),
                max_size=4,
            )
        }
    ),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(PAYLOADS)
def test_any_payload_is_either_refused_as_malformed_or_split_into_loaded_and_failed_locations(payload):
    requested = [1, 2, 3]
    start = datetime(2026, 10, 5, 8)
    try:
        parsed = parse_forecasts(payload, requested, start, start + timedelta(hours=2), start)
    except MalformedPayload as error:
        assert " field " in str(error)
        return
    loaded = {row["location_id"] for row in parsed.rows}
    assert loaded.isdisjoint(parsed.failed) and loaded | set(parsed.failed) == set(requested)
    for row in parsed.rows:
        assert -60 <= row["temperature_c"] <= 60 and 0 <= row["precipitation_mm"] <= 500
        assert 0 <= row["wind_kmh"] <= 400 and start <= row["ts"] < start + timedelta(hours=2)
