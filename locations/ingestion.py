"""The `ingestion` code location (jobs/locations.py): Bronze loads (OLTP, telemetry drops, the weather
API) and Iceberg upkeep, and the sensors that watch every location (audit, alerts, freshness)."""

from definitions import build_location
from resources.settings import load_settings

defs = build_location("ingestion", load_settings())
