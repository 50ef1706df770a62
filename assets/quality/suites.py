"""Great Expectations suite files (`expectations/*.json`): parsing and what each suite reads.

One JSON file per guarded table, named after the table (`bronze.telemetry.json` guards
`bronze/telemetry`). Each expectation becomes one asset check named by its `meta.check`; its GX
`severity` decides whether the check gates (`critical` blocks, `warning` only reports). Parsing only
reads JSON, so the code location can build the checks without importing Great Expectations.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from resources.settings import REPO_ROOT

EXPECTATIONS_DIR = REPO_ROOT / "expectations"
BLOCKING_SEVERITY = "critical"
SEVERITIES = {"critical", "warning"}
# Keyword arguments through which an expectation names a column it reads (and `column_list`).
COLUMN_KWARGS = ("column", "column_A", "column_B")
# Table-level expectations that need the row count only, not any column.
ROW_COUNT_EXPECTATIONS = {"expect_table_row_count_to_equal", "expect_table_row_count_to_be_between"}


@dataclass(frozen=True)
class SuiteCheck:
    name: str
    blocking: bool
    description: str
    expectation: dict


@dataclass(frozen=True)
class SuiteFile:
    """A parsed suite file: the table it guards and one check per expectation."""

    path: Path
    asset_key: dg.AssetKey
    suite: dict
    checks: tuple[SuiteCheck, ...]
    time_column: str | None = None  # filters a partitioned table's rows to the partition window
    date_column: str | None = None

    @property
    def layer(self) -> str:
        return self.asset_key.path[0]

    @property
    def table(self) -> str:
        return self.asset_key.path[-1]


class SuiteFileError(ValueError):
    """A suite file that cannot become checks; the message names the file and the expectation."""


def describe(expectation: dict) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in expectation.get("kwargs", {}).items())
    return f"{expectation['type']}({kwargs})"


def parse_suite_file(path: Path) -> SuiteFile:
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SuiteFileError(f"{path.name}: not valid JSON ({exc})") from exc
    name = suite.get("name", "")
    if name != path.name.removesuffix(".json") or name.count(".") != 1:
        raise SuiteFileError(f"{path.name}: 'name' must be '<layer>.<table>' and match the file name, got {name!r}")
    checks, seen = [], set()
    for index, expectation in enumerate(suite.get("expectations", [])):
        check = expectation.get("meta", {}).get("check")
        severity = expectation.get("severity", BLOCKING_SEVERITY)
        where = f"{path.name}: expectation {index} ({expectation.get('type')})"
        if not check:
            raise SuiteFileError(f"{where}: needs meta.check, the name of its asset check")
        if check in seen:
            raise SuiteFileError(f"{where}: check name {check!r} is used twice")
        if severity not in SEVERITIES:
            raise SuiteFileError(f"{where}: severity must be one of {sorted(SEVERITIES)}, got {severity!r}")
        seen.add(check)
        checks.append(SuiteCheck(check, severity == BLOCKING_SEVERITY, describe(expectation), expectation))
    strata = suite.get("meta", {}).get("strata", {})
    return SuiteFile(
        path=path,
        asset_key=dg.AssetKey(name.split(".")),
        suite=suite,
        checks=tuple(checks),
        time_column=strata.get("time_column"),
        date_column=strata.get("date_column"),
    )


def load_suite_files(folder: Path = EXPECTATIONS_DIR) -> list[SuiteFile]:
    return [parse_suite_file(path) for path in sorted(folder.glob("*.json"))]


def referenced_columns(suite: SuiteFile) -> tuple[str, ...] | None:
    """The columns the suite's expectations read, in first-mention order, or None when one of them
    may read any column (a row_condition, a table-level expectation such as
    expect_table_columns_to_match_set): then the whole table is read. Row-count expectations need
    no column."""
    columns: dict[str, None] = {}
    for check in suite.checks:
        kwargs = check.expectation.get("kwargs", {})
        column_list = kwargs.get("column_list", [])
        named = [kwargs[key] for key in COLUMN_KWARGS if key in kwargs] + (
            column_list if isinstance(column_list, list) else [column_list]
        )
        if kwargs.get("row_condition") or not all(isinstance(name, str) for name in named):
            return None  # a row filter's columns, or columns given as $PARAMETER, are known only to GX
        if not named and check.expectation["type"] not in ROW_COUNT_EXPECTATIONS:
            return None
        columns.update(dict.fromkeys(named))
    return tuple(columns)


def columns_to_read(suite: SuiteFile, table_columns: Sequence[str]) -> list[str]:
    """The table's columns that the suite reads, in table order. A column the suite names but the
    table lacks stays missing, so GX reports it as before; at least one column is read so that
    row-count expectations see every row."""
    wanted = referenced_columns(suite)
    if wanted is None:
        return list(table_columns)
    return [name for name in table_columns if name in wanted] or list(table_columns[:1])
