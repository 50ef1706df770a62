"""A demo weather API on 127.0.0.1: hourly forecasts per location, deterministic for a seed, with faults.

The platform's weather ingestion (`assets/bronze/weather.py`) talks to it with a real HTTP client, so
the demo and the tests exercise the same code path a real provider would. One location stands for a
cluster of `STATIONS_PER_LOCATION` consecutive stations (50 locations at scale 1, 200 stations);
`dbt/macros/weather.sql` maps a station to its location the same way.

Endpoints:
- `GET /v1/locations` -> `{"locations": [{"location_id": 1, "name": ..., "station_ids": [...]}]}`
- `GET /v1/forecast?location_ids=1,2&start=2026-10-01T00:00&hours=48`
  -> `{"generated_at": ..., "forecasts": [{"location_id": 1, "hourly": [{"ts", "temperature_c",
  "precipitation_mm", "wind_kmh"}, ...]}]}`
- `GET /_faults`, `POST /_faults` (JSON body with `WeatherFaults` fields): read or switch the faults of
  the running server, e.g. `curl -X POST localhost:8765/_faults -d '{"rate_limited_requests": 2}'`.

A value is a pure function of (seed, location, hour): asking twice gives the same answer, whatever the
order or the batch. Faults count down per request (`*_requests`) or apply while set (the location lists).
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from demo.world import scaled_count

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
STATIONS_PER_LOCATION = 4
MAX_HOURS = 24 * 31
OUT_OF_RANGE_TEMPERATURE_C = 71.5  # what `out_of_range_locations` report for their first hour
MALFORMED_PRECIPITATION = "n/a"  # what `malformed_locations` report for their first hour


def location_count(scale: float) -> int:
    """Locations of a demo world: one per cluster of stations (the demo's stations are numbered 1..n)."""
    return math.ceil(scaled_count(scale, 200, 5) / STATIONS_PER_LOCATION)


def stations_of(location_id: int) -> list[int]:
    first = (location_id - 1) * STATIONS_PER_LOCATION + 1
    return list(range(first, first + STATIONS_PER_LOCATION))


def hourly_weather(seed: int, location_id: int, hour: datetime) -> dict[str, float]:
    """The weather of one location and hour: a daily temperature cycle, showers, wind; rounded like a provider."""
    rng = random.Random(f"{seed}:{location_id}:{hour:%Y-%m-%dT%H}")  # str seeds hash with sha512: stable
    season = 12.0 - 8.0 * math.cos(2 * math.pi * (hour.timetuple().tm_yday - 15) / 365)
    daily = 5.0 * math.sin(2 * math.pi * (hour.hour - 9) / 24)
    raining = rng.random() < 0.15
    return {
        "temperature_c": round(season + daily + (location_id % 7) * 0.3 + rng.gauss(0, 1.5), 1),
        "precipitation_mm": round(rng.expovariate(1 / 1.8), 1) if raining else 0.0,
        "wind_kmh": round(abs(rng.gauss(14, 7)), 1),
    }


@dataclass
class WeatherFaults:
    """What the server gets wrong. The `*_requests` counters apply to that many next forecast requests
    each (timeout first, then 429, then 5xx, then truncation); the location lists apply while set."""

    timeout_requests: int = 0  # answer only after `stall_seconds` (longer than the client waits)
    stall_seconds: float = 3.0
    rate_limited_requests: int = 0  # HTTP 429 with `Retry-After: retry_after_seconds`
    retry_after_seconds: int = 1
    server_error_requests: int = 0  # HTTP 503
    truncated_requests: int = 0  # HTTP 200 with the JSON body cut in half
    missing_locations: list[int] = field(default_factory=list)  # left out of the response
    out_of_range_locations: list[int] = field(default_factory=list)  # temperature_c of 71.5 in the first hour
    malformed_locations: list[int] = field(default_factory=list)  # precipitation_mm "n/a" in the first hour

    def update(self, changes: dict) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown weather faults {sorted(unknown)}; known: {sorted(names)}")
        for name, value in changes.items():
            setattr(self, name, value)


@dataclass
class WeatherApiState:
    seed: int
    locations: int
    token: str | None = None  # when set, requests need `Authorization: Bearer <token>`
    faults: WeatherFaults = field(default_factory=WeatherFaults)
    forecast_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, counter: str) -> bool:
        """Use up one request of a fault counter; True when this request gets the fault."""
        left = getattr(self.faults, counter)
        if left > 0:
            setattr(self.faults, counter, left - 1)
            return True
        return False


def forecast_payload(state: WeatherApiState, location_ids: list[int], start: datetime, hours: int) -> dict:
    faults = state.faults
    forecasts = []
    for location_id in location_ids:
        if location_id in faults.missing_locations or not 1 <= location_id <= state.locations:
            continue
        hourly = []
        for offset in range(hours):
            hour = start + timedelta(hours=offset)
            hourly.append({"ts": f"{hour:%Y-%m-%dT%H:%M:%SZ}", **hourly_weather(state.seed, location_id, hour)})
        if hourly and location_id in faults.out_of_range_locations:
            hourly[0]["temperature_c"] = OUT_OF_RANGE_TEMPERATURE_C
        if hourly and location_id in faults.malformed_locations:
            hourly[0]["precipitation_mm"] = MALFORMED_PRECIPITATION
        forecasts.append({"location_id": location_id, "hourly": hourly})
    return {"generated_at": f"{start:%Y-%m-%dT%H:%M:%SZ}", "forecasts": forecasts}


def make_handler(state: WeatherApiState) -> type[BaseHTTPRequestHandler]:
    class WeatherApiHandler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # one line per request would drown the `make dev` output
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: object, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(value).encode(), headers)

        def _authorised(self) -> bool:
            if state.token and self.headers.get("Authorization") != f"Bearer {state.token}":
                self._json(401, {"error": "missing or wrong bearer token"})
                return False
            return True

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/_faults":
                with state.lock:
                    return self._json(200, asdict(state.faults))
            if not self._authorised():
                return None
            if url.path == "/v1/locations":
                locations = [
                    {"location_id": i, "name": f"station cluster {i}", "station_ids": stations_of(i)}
                    for i in range(1, state.locations + 1)
                ]
                return self._json(200, {"locations": locations})
            if url.path == "/v1/forecast":
                return self._forecast(parse_qs(url.query))
            return self._json(404, {"error": f"no such endpoint {url.path}"})

        def _forecast(self, query: dict[str, list[str]]) -> None:
            try:
                location_ids = [int(v) for v in query["location_ids"][0].split(",") if v]
                start = datetime.fromisoformat(query["start"][0].removesuffix("Z")).replace(tzinfo=None)
                hours = int(query.get("hours", ["48"])[0])
                if not 0 < hours <= MAX_HOURS or start.minute or start.second:
                    raise ValueError(f"hours must be 1..{MAX_HOURS} and start a whole hour")
            except (KeyError, ValueError) as error:
                return self._json(400, {"error": f"bad request: {error}"})
            with state.lock:
                state.forecast_requests += 1
                stall = state.take("timeout_requests")
                limited = not stall and state.take("rate_limited_requests")
                failing = not stall and not limited and state.take("server_error_requests")
                truncated = not (stall or limited or failing) and state.take("truncated_requests")
                payload = forecast_payload(state, location_ids, start, hours)
                retry_after = state.faults.retry_after_seconds
                stall_seconds = state.faults.stall_seconds
            if stall:
                time.sleep(stall_seconds)
            if limited:
                return self._json(429, {"error": "rate limited"}, {"Retry-After": str(retry_after)})
            if failing:
                return self._json(503, {"error": "upstream unavailable"})
            body = json.dumps(payload).encode()
            return self._send(200, body[: len(body) // 2] if truncated else body)

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/_faults":
                return self._json(404, {"error": "only /_faults accepts POST"})
            try:
                changes = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                with state.lock:
                    state.faults.update(changes)
                    current = asdict(state.faults)
            except (ValueError, TypeError) as error:
                return self._json(400, {"error": str(error)})
            return self._json(200, current)

    return WeatherApiHandler


class WeatherApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: WeatherApiState, port: int = 0) -> None:
        super().__init__((HOST, port), make_handler(state))
        self.state = state

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"


@contextmanager
def serve_weather_api(
    seed: int = 42, scale: float = 1.0, *, port: int = 0, token: str | None = None, faults: WeatherFaults | None = None
) -> Iterator[WeatherApiServer]:
    """Run the demo API in a background thread until the block ends (port 0: a free port)."""
    state = WeatherApiState(seed=seed, locations=location_count(scale), token=token, faults=faults or WeatherFaults())
    server = WeatherApiServer(state, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def serve_forever(seed: int, scale: float, port: int, token: str | None, faults: WeatherFaults) -> None:
    """`python -m demo weather-api`: serve in the foreground until stopped."""
    state = WeatherApiState(seed=seed, locations=location_count(scale), token=token, faults=faults)
    with WeatherApiServer(state, port) as server:
        print(f"demo weather API on {server.url} ({state.locations} locations, seed {seed})", flush=True)
        server.serve_forever(poll_interval=0.2)
