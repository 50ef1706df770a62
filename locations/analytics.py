"""The `analytics` code location: ML (features, retraining, forecast) and the weekly report (jobs/locations.py)."""

from definitions import build_location
from resources.settings import load_settings

defs = build_location("analytics", load_settings())
