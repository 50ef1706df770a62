"""Pre-run guard for ingestion: is it sensible to run at all?

A guard that fails is not a data failure. The asset does not run: it materializes nothing, so
nothing downstream runs either, and the run is tagged `strata/not_run` with the reason. It ends as a
success, because nothing was wrong with the data. The checks are source reachable with valid
credentials, the expected partition's drops present, and enough free disk (`resources/ingestion_guard.py`
holds the guard's configuration).

An unreachable source or a full disk is an outage: the observation says so (`strata/outage`) and
`not_run_alert_sensor` alerts once per run. Drops that are not ready yet are only late; the freshness
policy of `bronze/telemetry` alerts on that, so it does not alert here too.
"""

from collections.abc import Sequence
from datetime import datetime

import dagster as dg

from assets.drops.protocol import READY_NAME, drop_prefix
from audit.metadata import NOT_RUN_TAG
from resources.landing import LandingZone
from resources.redaction import scrub
from resources.source_db import SourceDatabase

OUTAGE_KEY = "strata/outage"


class NotReadyYet(str):
    """A guard problem that is lateness upstream (drops not READY yet), not an outage of a system."""


def source_problem(source: SourceDatabase) -> str | None:
    """None when the source answers a trivial query with our credentials; else why not (no secrets)."""
    try:
        source.read_arrow("SELECT 1 AS ok")
    except Exception as exc:  # any driver error means the same thing here: we cannot extract now
        first = (scrub(str(exc)).splitlines() or [""])[0][:200]  # scrubbed before the cut: no half secret
        return f"source {source.display_url} not reachable: {type(exc).__name__}: {first}"
    return None


def missing_drops_problem(landing: LandingZone, dataset: str, hours: Sequence[datetime]) -> str | None:
    missing = [drop_prefix(dataset, h) for h in hours if not landing.exists(drop_prefix(dataset, h) + READY_NAME)]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return NotReadyYet(f"{len(missing)} of {len(hours)} expected drop(s) not ready (no {READY_NAME}): {shown}")
    return None


def guard_passes(context: dg.AssetExecutionContext, problems: Sequence[str | None]) -> bool:
    """True when no problem was found; otherwise record why the asset did not run and return False."""
    reasons = [p for p in problems if p]
    if not reasons:
        return True
    # The reason goes into a run tag, the event log and the console: scrubbed like every text leaving a run.
    reason = scrub("; ".join(reasons))
    context.log.warning(f"not running {context.asset_key.to_user_string()}: {reason}")
    context.instance.add_run_tags(context.run.run_id, {NOT_RUN_TAG: reason[:4000]})
    outage = any(not isinstance(p, NotReadyYet) for p in reasons)
    context.log_event(
        dg.AssetObservation(asset_key=context.asset_key, metadata={NOT_RUN_TAG: reason, OUTAGE_KEY: outage})
    )
    return False
