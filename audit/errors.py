"""Error summaries for the audit trail: the useful message of a failure, scrubbed of secrets.

The audit table is read by people who must not see credentials, and exception messages routinely echo
connection strings or configuration values, so every summary is scrubbed (`resources.redaction.scrub`,
the platform's one scrubber) before it is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from resources.redaction import scrub

MAX_ERROR_CHARS = 1000
MAX_ERROR_LINES = 2  # per error in a cause chain: the message, not the query or stack that follows
# Dagster wraps a user error in these; their own message ("Error occurred while executing op") says nothing.
WRAPPER_ERRORS = frozenset(
    {
        "DagsterExecutionStepExecutionError",
        "DagsterExecutionHandleOutputError",
        "DagsterExecutionLoadInputError",
        "DagsterResourceFunctionError",
        "DagsterUserCodeExecutionError",
    }
)


def truncate(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def error_chain(error: Any) -> list[Any]:
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.cause or getattr(error, "context", None)
    return chain


def describe_error(error: Any) -> str:
    """The useful part of a SerializableErrorInfo: the messages of its cause chain, without stacks."""
    chain = error_chain(error)
    useful = [e for e in chain if e.cls_name not in WRAPPER_ERRORS] or chain[:1]
    parts: list[str] = []
    for e in useful:
        lines = [line.strip() for line in (e.message or e.cls_name or "").strip().splitlines() if line.strip()]
        text = " / ".join(lines[:MAX_ERROR_LINES])
        if text and text not in parts:
            parts.append(text)
    return " <- ".join(parts)


def error_summary(
    status: str,
    step_failures: Sequence[tuple[str, Any]],
    run_failure: tuple[str, Any] | None,
    canceled_message: str | None,
    failure_reason: str | None,
    secrets: Iterable[str],
) -> str | None:
    """Which steps failed and why, scrubbed of secrets and cut to MAX_ERROR_CHARS; None for a success."""
    if status == "SUCCESS":
        return None
    parts = [f"step {step}: {describe_error(error) if error else 'failed'}" for step, error in step_failures]
    if not parts and run_failure is not None:
        message, error = run_failure
        parts.append(f"run: {describe_error(error) if error else message}")
    if status == "CANCELED":
        parts.insert(0, f"canceled: {canceled_message or 'run canceled'}")
    if not parts:
        parts.append("run failed without an error event")
    prefix = f"[{failure_reason}] " if failure_reason and status == "FAILURE" else ""
    # Scrub before cutting: a secret cut in half would no longer match its value.
    return truncate(scrub(prefix + "; ".join(parts), secrets))
