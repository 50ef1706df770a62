"""The weather API: where it is, which locations to ask for, the NAME of its token secret, how to retry.

Transient failures (a timeout, a dropped connection, HTTP 429, HTTP 5xx, a body that is not complete
JSON) are retried by `stamina` with exponential backoff and jitter; a 429's `Retry-After` sets the wait.
Everything else (401, 404, 400) is an answer, not an accident: it is raised at once as
`WeatherApiRefused`. The token is read from the secrets backend when a request is made, registered for
scrubbing, and travels only in the Authorization header: never in config, metadata, logs or errors.
httpx and stamina are imported when the API is first called, so the code location loads without them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg

from resources.redaction import scrub
from resources.secrets import SecretsResource
from resources.settings import DEFAULT_WEATHER_API_URL, WEATHER_AUTH_SECRET, StrataSettings


class TransientApiError(Exception):
    """An answer worth asking again for: 429, 5xx, or a truncated body. `retry_after` is the server's wish."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WeatherApiRefused(Exception):
    """A deterministic refusal (bad credentials, bad request, unknown endpoint): asking again cannot help."""


class WeatherApiUnavailable(Exception):
    """Transient failures went on past the retry budget; the message says what the last one was."""


@dataclass(frozen=True)
class ApiResponse:
    """A decoded JSON answer with what it cost: the time of the successful request and the retries before it."""

    payload: Any
    response_ms: float
    retries: int


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` in seconds (the delay form; an HTTP date is treated as absent), or None."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class WeatherApi(dg.ConfigurableResource):
    """A forecast provider speaking the demo API's protocol (demo/weather_api.py)."""

    secrets: SecretsResource
    base_url: str = DEFAULT_WEATHER_API_URL
    locations: list[int] = []  # empty: every location of the provider's catalogue (`/v1/locations`)
    auth_secret: str = WEATHER_AUTH_SECRET  # a secret NAME; no token set means no Authorization header
    timeout_seconds: float = 5.0
    retry_attempts: int = 5
    retry_wait_initial_seconds: float = 0.5
    retry_wait_max_seconds: float = 10.0
    retry_budget_seconds: float = 120.0  # give up retrying after this long, whatever the attempts left
    batch_size: int = 25  # locations per forecast request
    history_hours: int = 24  # hours before the current one to ask for (late corrections of the past)
    forecast_hours: int = 48  # hours from the current one on
    # The platform's first day (ISO date, STRATA_START_DATE): a Bronze table missing or lagging behind the
    # history window is caught up from its newest hour, or from this day; empty: no catch-up.
    catch_up_from: str = ""
    catch_up_chunk_hours: int = 168  # hours per request while catching up (a week: bounded answers)

    def get_json(self, path: str, params: dict[str, str] | None = None) -> ApiResponse:
        """GET `path` and decode its JSON, retrying what is transient; raises `WeatherApiRefused` or
        `WeatherApiUnavailable` (both name the endpoint, never the token)."""
        import httpx
        import stamina

        url = f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"
        token = self.secrets.get_optional(self.auth_secret) if self.auth_secret else None
        headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}

        def retry_on(error: Exception) -> bool | float:
            if isinstance(error, TransientApiError):
                return error.retry_after if error.retry_after is not None else True
            return isinstance(error, httpx.TimeoutException | httpx.TransportError)

        attempts = 0
        try:
            with httpx.Client(timeout=self.timeout_seconds, headers=headers) as client:
                for attempt in stamina.retry_context(
                    on=retry_on,
                    attempts=self.retry_attempts,
                    timeout=self.retry_budget_seconds,
                    wait_initial=self.retry_wait_initial_seconds,
                    wait_max=self.retry_wait_max_seconds,
                ):
                    with attempt:
                        attempts += 1
                        began = time.perf_counter()
                        payload = self._decode(client.get(url, params=params), path)
                        return ApiResponse(payload, (time.perf_counter() - began) * 1000, attempts - 1)
        except (TransientApiError, httpx.TimeoutException, httpx.TransportError) as error:
            raise WeatherApiUnavailable(
                scrub(f"weather API {path} still failing after {attempts} attempt(s): {type(error).__name__}: {error}")
            ) from None
        raise AssertionError("unreachable: stamina either returns, retries or raises")

    @staticmethod
    def _decode(response: Any, path: str) -> Any:
        status = response.status_code
        if status == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            raise TransientApiError(f"HTTP 429 rate limited (Retry-After {wait})", retry_after=wait)
        if status >= 500:
            raise TransientApiError(f"HTTP {status}")
        if status != 200:
            raise WeatherApiRefused(f"weather API {path} refused the request: HTTP {status} {response.text[:200]}")
        try:
            return json.loads(response.content)
        except ValueError as error:  # a cut connection or a proxy's half page: worth another try
            raise TransientApiError(
                f"the body of {len(response.content)} bytes is not complete JSON ({error})"
            ) from None

    def location_ids(self) -> tuple[list[int], ApiResponse | None]:
        """The configured locations, else the provider's catalogue (and the response that listed them)."""
        if self.locations:
            return sorted(set(self.locations)), None
        response = self.get_json("/v1/locations")
        try:
            return sorted(int(entry["location_id"]) for entry in response.payload["locations"]), response
        except (KeyError, TypeError, ValueError) as error:
            raise WeatherApiRefused(f"weather API /v1/locations answered without a location list ({error!r})") from None

    def forecasts(self, location_ids: list[int], start: datetime, hours: int) -> ApiResponse:
        """One forecast request for these locations, hourly from `start` (a naive UTC whole hour)."""
        params = {
            "location_ids": ",".join(str(i) for i in location_ids),
            "start": f"{start:%Y-%m-%dT%H:%M}",
            "hours": str(hours),
        }
        return self.get_json("/v1/forecast", params)


def build_weather_api(settings: StrataSettings, secrets: SecretsResource) -> WeatherApi:
    """The weather API of this environment (STRATA_WEATHER_URL, _LOCATIONS, _AUTH_SECRET, _TIMEOUT_SECONDS)."""
    weather = settings.weather
    locations = [int(v) for v in weather.get("locations", "").split(",") if v.strip()]
    return WeatherApi(
        secrets=secrets,
        base_url=weather.get("url", DEFAULT_WEATHER_API_URL),
        locations=locations,
        auth_secret=weather.get("auth_secret", WEATHER_AUTH_SECRET),
        timeout_seconds=float(weather.get("timeout_seconds", "5")),
        catch_up_from=settings.start_date.isoformat(),
    )
