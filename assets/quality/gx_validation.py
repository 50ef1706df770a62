"""Our Great Expectations 1.x wrapper (dagster-ge requires GX < 1.0): validate a pandas frame
against a suite and report each expectation with its counts and a sample of offending values.

GX (several seconds to import) is imported only here, inside functions, when a check runs. A check
costs little next to the materialization it checks: one GX context per process whose data source
and suites are built once, with GX's whole-frame batch fingerprint turned off (see `gx_context`).
Every expectation still sees every row.
"""

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import dagster as dg

from assets.bronze.contracts import pii_column_names
from assets.quality.suites import COLUMN_KWARGS, SuiteFile, describe

SAMPLE_SIZE = 10
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE}


@dataclass(frozen=True)
class ExpectationOutcome:
    check: str
    success: bool
    metadata: dict[str, Any]


_gx_lock = threading.Lock()  # GX contexts are not documented as thread-safe; the cached one is shared


@cache
def gx_context():
    """One ephemeral GX context and pandas data source per process.

    Building a context, data source, asset and suite for every validation costs tens of
    milliseconds. GX also fingerprints every pandas batch it loads (an md5 of
    `pd.util.hash_pandas_object` over the whole frame, twice per validation) just to put it in the
    result's batch markers, which these checks never read: on a million rows that was the costliest
    step after the expectations themselves, so it is turned off. Nothing else changes.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0  # fingerprint frames smaller than 0 bytes, i.e. none
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context, context.data_sources.add_pandas("strata")


def forget_loaded_batches() -> None:
    """Drop the frames GX's shared execution engine keeps from the last validation, so the cached
    context does not hold a partition's rows in memory until the next check runs."""
    manager = gx_context()[1].get_execution_engine().batch_manager
    manager.reset_batch_cache()
    manager.batch_data_cache.clear()


_prepared_suites: dict[str, tuple[str, Any, Any]] = {}  # suite name -> (its expectations as JSON, GX objects)


def prepared_suite(name: str, expectations: list[dict]):
    """The batch definition and GX suite for a suite file, built once per process and rebuilt when
    the file's expectations change. GX objects are named after the suite (GX puts the asset name
    into each result's batch_id, which the check metadata shows), so a changed suite replaces them."""
    import great_expectations as gx

    content = json.dumps(expectations)
    cached = _prepared_suites.get(name)
    if cached is not None and cached[0] == content:
        return cached[1], cached[2]
    context, source = gx_context()
    if cached is not None:
        source.delete_asset(name)
        context.suites.delete(name)
    batch_definition = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("partition")
    gx_suite = context.suites.add(
        gx.ExpectationSuite(name=name, expectations=[{k: v for k, v in e.items() if k != "id"} for e in expectations])
    )
    _prepared_suites[name] = (content, batch_definition, gx_suite)
    return batch_definition, gx_suite


def validate(suite: SuiteFile, rows, parameters: Mapping[str, Any]) -> list[ExpectationOutcome]:
    """Run the suite on `rows` (every row, every expectation); one outcome per expectation."""
    with _gx_lock:
        batch_definition, gx_suite = prepared_suite(suite.suite["name"], [c.expectation for c in suite.checks])
        try:
            batch = batch_definition.get_batch(batch_parameters={"dataframe": rows})
            result = batch.validate(gx_suite, result_format=RESULT_FORMAT, expectation_parameters=dict(parameters))
        finally:
            forget_loaded_batches()
    outcomes = []
    for item in result.results:
        details = item.result or {}
        metadata: dict[str, Any] = {"expectation": describe(item.expectation_config.to_json_dict())}
        # No value of personal data: check metadata is shown in the UI and kept in the event log. An
        # expectation reading a PII column reports counts only (an observed value may be one of its values).
        personal = reads_pii(item.expectation_config.kwargs)
        for key in ("element_count", "unexpected_count", "unexpected_percent", "observed_value"):
            value = details.get(key)
            if value is not None and not (personal and key == "observed_value" and not _is_number(value)):
                metadata[key] = _plain(value)
        if details.get("partial_unexpected_list") and not personal:
            metadata["unexpected_sample"] = dg.MetadataValue.json(_plain(details["partial_unexpected_list"]))
        if item.exception_info and item.exception_info.get("raised_exception"):
            metadata["error"] = item.exception_info.get("exception_message", "")
        outcomes.append(ExpectationOutcome(item.expectation_config.meta["check"], bool(item.success), metadata))
    return outcomes


def reads_pii(kwargs: Mapping[str, Any]) -> bool:
    """Whether an expectation reads a column some contract classifies as personal data."""
    named = [kwargs.get(k) for k in COLUMN_KWARGS] + list(kwargs.get("column_list") or ())
    return not pii_column_names().isdisjoint(c for c in named if isinstance(c, str))


def _is_number(value: Any) -> bool:
    return isinstance(_plain(value), int | float) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    """JSON-safe values for metadata (numpy scalars, timestamps)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)
