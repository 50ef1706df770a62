"""The `transforms` code location: the dbt project: Silver and Gold models and their tests (jobs/locations.py)."""

from definitions import build_location
from resources.settings import load_settings

defs = build_location("transforms", load_settings())
