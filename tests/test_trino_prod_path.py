"""The prod dbt path rendered by the real dbt-trino adapter, not only parsed.

No Trino server can run here. dbt runs its real materializations (`dbt run --target prod`) against the
Trino HTTP stand-in (tests/trino_server.py), which records every statement the adapter sends and answers
catalog questions the way Trino's information_schema would for the warehouse in the scenario: empty
(first build: the contract DDL, CREATE TABLE AS) or holding every model (incremental run: the MERGE into
silver.bookings, the delete + insert appends of the daily models). Each recorded statement must then
parse as Trino SQL (sqlglot, read="trino", no opaque fallback) and have the expected shape.

Chosen over rendering the adapter macros by hand (`dbt compile --inline "{{ get_merge_sql(...) }}"`):
that would re-create the materialization's arguments (columns, temp relation, hooks) in the test,
while here they are what dbt-trino itself computes, in the order it runs them.

What the stand-in cannot judge: Trino's own typing of a model's SELECT. For dbt's contract check it
reports the contract's casts typed as Trino types them (`timestamp` is timestamp(3)) and the model's
columns with the contract's types as read from Iceberg (timestamp(6)); dbt-trino compares base types
only. So a missing, extra or renamed contract column fails here, a wrong type only on Trino (the local
DuckDB run enforces the same contract with real types).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_dbt_project import DAILY_MODELS, DAILY_VIEWS, DBT_DIR, MODEL_SCHEMAS, run_dbt
from tests.trino_server import StubResult, TrinoStub, serve_trino

CATALOG = "iceberg"
WINDOW = {"STRATA_WINDOW_START": "2026-10-01", "STRATA_WINDOW_END": "2026-10-03"}
# Iceberg snapshot ids are 64-bit; one beyond 2**53 proves no float conversion on the way.
PINS = {
    "customers": 101,
    "stations": 102,
    "vehicles": 103,
    "bookings": 8954597067493422955,
    "payments": 105,
    "telemetry": 106,
    "weather_forecasts": 107,
    # the oil & gas domain
    "fields": 108,
    "wells": 109,
    "well_production": 110,
    "journal_lines": 111,
    "journal_control_totals": 112,
}
# Models with an enforced contract (their first build declares the columns' types).
CONTRACT_MODELS = {"bookings", "telemetry_clean", "field_production_daily", "trial_balance_daily"}
CONTRACT_MODELS |= {"trial_balance_reconciliation"}
# Bronze feeds read by the daily views (tagged `daily`), which the daily run rebuilds on the run's pins.
DAILY_FEEDS = {"telemetry", "journal_lines", "journal_control_totals"}
TMP_SUFFIX = "__dbt_tmp"


@dataclass
class ProdRun:
    statements: list[str]  # what dbt-trino sent, in order, leading comments removed
    manifest: dict


def model_columns(manifest: dict) -> dict[str, list[tuple[str, str]]]:
    """Each model's documented columns with their declared type (varchar where none is declared)."""
    return {
        node["name"]: [(c["name"], c.get("data_type") or "varchar") for c in node["columns"].values()]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
    }


def catalog_responder(manifest: dict, existing: bool):
    """Answers dbt-trino's catalog queries as Trino would for a warehouse that is empty or holds every model."""
    columns = model_columns(manifest)
    contracts = {frozenset(name for name, _ in columns[m]): dict(columns[m]) for m in CONTRACT_MODELS}
    kinds = {
        node["name"]: "view" if node["config"]["materialized"] == "view" else "table"
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
    }

    def respond(sql: str) -> StubResult | None:
        low = sql.lower()
        if "information_schema.schemata" in low:
            return StubResult(columns=[("schema_name", "varchar")], rows=[["bronze"], ["silver"], ["gold"]])
        if "information_schema.tables" in low:
            schema = re.search(r"t\.table_schema = '(\w+)'", low)[1]
            rows = [
                [CATALOG, name, schema, kinds[name]]
                for name, model_schema in MODEL_SCHEMAS.items()
                if existing and model_schema == schema
            ]
            if schema == "bronze":  # Bronze is loaded before dbt runs: its tables exist in both scenarios
                rows += [[CATALOG, name, schema, "table"] for name in PINS]
            names = [("database", "varchar"), ("name", "varchar"), ("schema", "varchar"), ("table_type", "varchar")]
            return StubResult(columns=names, rows=rows)
        if "information_schema.columns" in low:
            table = re.search(r"table_name = '(\w+)'", low)[1].removesuffix(TMP_SUFFIX)
            return StubResult(columns=[("column_name", "varchar"), ("data_type", "varchar")], rows=columns[table])
        if re.search(r"\bwhere false\s+limit 0\s*$", low):
            return contract_check_answer(sql, contracts)
        return None

    return respond


def trino_type_of_read(declared: str) -> str:
    """The type Trino reports for a model column whose values come from Bronze: Iceberg's timestamp is
    microseconds, `timestamp(6)` in Trino, whatever the contract declares."""
    return "timestamp(6)" if declared.startswith("timestamp") else declared


def trino_type_of_cast(declared: str) -> str:
    """The type Trino gives `cast(null as <declared>)`: a timestamp without precision is timestamp(3)."""
    return "timestamp(3)" if declared == "timestamp" else declared


def contract_check_answer(sql: str, contracts: dict[frozenset[str], dict[str, str]]) -> StubResult:
    """The columns Trino would describe for dbt's contract check (`select * from (...) where false limit 0`),
    once for the contract (`cast(null as <type>) as <column>` each) and once for the model's SELECT."""
    import sqlglot
    from sqlglot import exp

    inner = sqlglot.parse_one(sql, read="trino").find(exp.Subquery).this
    names = inner.named_selects
    contract = contracts.get(frozenset(names), {})
    projections = [p.this if isinstance(p, exp.Alias) else p for p in inner.expressions]
    if all(isinstance(p, exp.Cast) and isinstance(p.this, exp.Null) for p in projections):
        types = [trino_type_of_cast(p.to.sql("trino").lower()) for p in projections]
    else:
        types = [trino_type_of_read(contract.get(name, "varchar")) for name in names]
    return StubResult(columns=list(zip(names, types, strict=True)))


def strip_leading_comments(sql: str) -> str:
    """The statement without dbt's query comment and the macros' leading `--` lines."""
    return re.sub(r"^(?:\s*/\*.*?\*/|\s*--[^\n]*)*", "", sql, flags=re.DOTALL).strip()


def run_prod(stub: TrinoStub, work: Path, manifest: dict, existing: bool) -> list[str]:
    stub.responder = catalog_responder(manifest, existing)
    stub.executed.clear()
    run_dbt(work, "run", "--target", "prod")
    return [strip_leading_comments(s) for s in stub.executed]


@pytest.fixture(scope="module")
def prod_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ProdRun]]:
    """`dbt run --target prod` twice against the stand-in: first build, then incremental."""
    work = tmp_path_factory.mktemp("trino_prod")
    with pytest.MonkeyPatch.context() as env, serve_trino(work) as stub:
        for name in list(os.environ):
            if name.startswith("STRATA_"):
                env.delenv(name)
        env.setenv("STRATA_TRINO_HOST", "127.0.0.1")
        env.setenv("STRATA_TRINO_PORT", str(stub.port))
        env.setenv("STRATA_BRONZE_SNAPSHOTS", json.dumps(PINS))
        for name, value in WINDOW.items():
            env.setenv(name, value)
        run_dbt(work, "parse", "--target", "prod")
        manifest = json.loads((work / "target" / "manifest.json").read_text())
        yield {
            "first": ProdRun(run_prod(stub, work, manifest, existing=False), manifest),
            "incremental": ProdRun(run_prod(stub, work, manifest, existing=True), manifest),
        }


def parse_trino(sql: str):
    """One statement as Trino SQL; sqlglot's opaque `Command` fallback counts as not understood."""
    import sqlglot
    from sqlglot import exp

    trees = [t for t in sqlglot.parse(sql, read="trino", error_level=sqlglot.ErrorLevel.RAISE) if t is not None]
    assert trees, sql
    for tree in trees:
        assert not isinstance(tree, exp.Command), f"sqlglot did not understand: {sql[:300]}"
    return trees


def table_name(table) -> str:
    return ".".join(part for part in (table.catalog, table.db, table.name) if part)


def statements_on(run: ProdRun, verb: str, relation: str) -> list[str]:
    pattern = re.compile(rf"^{verb}\s+{re.escape(relation)}(\s|$)", re.IGNORECASE)
    return [s for s in run.statements if pattern.match(s)]


def relation(model: str) -> str:
    return f'"{CATALOG}"."{MODEL_SCHEMAS[model]}"."{model}"'


# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["first", "incremental"])
def test_every_statement_dbt_trino_sends_parses_as_trino_sql(prod_runs, scenario):
    run = prod_runs[scenario]
    assert {model for model in MODEL_SCHEMAS if not any(relation(model) in sql for sql in run.statements)} == set()
    problems = {}
    for sql in run.statements:
        try:
            parse_trino(sql)
        except Exception as error:  # collect them all
            problems[sql[:200]] = str(error)[:300]
    assert problems == {}


@pytest.mark.parametrize("model", sorted(CONTRACT_MODELS))
def test_first_build_creates_the_contract_table_with_its_declared_columns(prod_runs, model):
    from sqlglot import exp

    run = prod_runs["first"]
    creates = statements_on(run, "create table", relation(model))
    assert len(creates) == 1, creates
    (create,) = parse_trino(creates[0])
    assert isinstance(create, exp.Create)
    assert table_name(create.this.this) == f"{CATALOG}.{MODEL_SCHEMAS[model]}.{model}"
    declared = [(c.name, c.args["kind"].sql("trino").lower()) for c in create.this.expressions]
    # sqlglot writes `decimal(19, 4)` where the YAML says `decimal(19,4)`: the same type
    assert [(n, t.replace(" ", "")) for n, t in declared] == model_columns(run.manifest)[model]
    # The rows follow in a separate INSERT of exactly the contract's columns, in its order.
    inserts = statements_on(run, "insert into", relation(model))
    assert len(inserts) == 1
    (insert,) = parse_trino(inserts[0])
    assert insert.find(exp.Select).named_selects == [name for name, _ in declared]
    assert run.statements.index(creates[0]) < run.statements.index(inserts[0])


def test_incremental_run_merges_into_silver_bookings_on_its_key(prod_runs):
    from sqlglot import exp

    run = prod_runs["incremental"]
    merges = [s for s in run.statements if s.lower().startswith("merge into")]
    assert len(merges) == 1, merges
    (merge,) = parse_trino(merges[0])
    assert isinstance(merge, exp.Merge)
    assert table_name(merge.this) == f"{CATALOG}.silver.bookings"
    assert table_name(merge.args["using"]) == f"{CATALOG}.silver.bookings{TMP_SUFFIX}"
    assert merge.args["on"].sql("trino") == "(DBT_INTERNAL_SOURCE.booking_id = DBT_INTERNAL_DEST.booking_id)"
    columns = [name for name, _ in model_columns(run.manifest)["bookings"]]
    matched, not_matched = merge.args["whens"].expressions
    assert [e.this.name for e in matched.args["then"].expressions] == columns
    assert [c.name for c in not_matched.args["then"].this.expressions] == columns
    # The source of the merge is the model's SQL, as a view created just before it.
    views = statements_on(run, "create or replace view", f'"{CATALOG}"."silver"."bookings{TMP_SUFFIX}"')
    assert len(views) == 1 and run.statements.index(views[0]) < run.statements.index(merges[0])
    assert "changed_at >= (select max(changed_at) from" in views[0]


@pytest.mark.parametrize("model", sorted(DAILY_MODELS))
def test_incremental_run_replaces_the_window_of_each_daily_model(prod_runs, model):
    from sqlglot import exp

    run = prod_runs["incremental"]
    deletes = statements_on(run, "delete from", relation(model))
    inserts = statements_on(run, "insert into", relation(model))
    assert len(deletes) == 1 and len(inserts) == 1, (deletes, inserts)
    assert run.statements.index(deletes[0]) < run.statements.index(inserts[0])
    (delete,) = parse_trino(deletes[0])
    bounds = sorted(lit.this for lit in delete.args["where"].find_all(exp.Literal) if lit.is_string)
    assert bounds[0].startswith(WINDOW["STRATA_WINDOW_START"]) and bounds[-1].startswith(WINDOW["STRATA_WINDOW_END"])
    (insert,) = parse_trino(inserts[0])
    assert (
        table_name(insert.find(exp.Select).find(exp.Table)) == f"{CATALOG}.{MODEL_SCHEMAS[model]}.{model}{TMP_SUFFIX}"
    )
    assert not any(s.lower().startswith(f"create or replace table {relation(model)}".lower()) for s in run.statements)


@pytest.mark.parametrize("scenario", ["first", "incremental"])
def test_every_bronze_read_is_pinned_to_the_runs_snapshot(prod_runs, scenario):
    from sqlglot import exp

    read = {}
    for sql in prod_runs[scenario].statements:
        for tree in parse_trino(sql):
            for table in tree.find_all(exp.Table):
                if table.db == "bronze":
                    version = table.args.get("version")
                    read.setdefault(table.name, set()).add(version.expression.this if version else None)
    assert read == {name: {str(snapshot)} for name, snapshot in PINS.items()}


# ---- dbt's prod profile covers every Trino setting of the Warehouse resource ------------------------

# Warehouse field -> the dbt-trino credential that carries the same setting.
PROFILE_FIELD = {
    "trino_host": "host",
    "trino_port": "port",
    "trino_user": "user",
    "trino_catalog": "database",
    "trino_schema": "schema",
    "trino_http_scheme": "http_scheme",
    "trino_method": "method",
    "trino_ca_bundle": "cert",
    # dbt reads the value (STRATA_TRINO_PASSWORD, set by dbt_models.dbt_environment from this secret)
    "trino_password_secret": "password",
}
# Warehouse settings that dbt-trino has no counterpart for, and why that is fine.
NOT_IN_DBT = {
    "trino_request_timeout_seconds": "dbt-trino sets no HTTP request timeout (it retries: `retries`)",
    "trino_legacy_prepared_statements": "models bind no parameters; dbt-trino only prepares seeds' inserts",
}


def dbt_prod_credentials(environ: dict[str, str]):
    """dbt/profiles.yml's prod target rendered by dbt itself with `environ`."""
    from argparse import Namespace

    import yaml
    from dbt.config.profile import Profile
    from dbt.config.renderer import ProfileRenderer
    from dbt.flags import set_from_args
    from dbt_common.context import set_invocation_context

    set_from_args(Namespace(), None)
    set_invocation_context(environ)
    raw = yaml.safe_load((DBT_DIR / "profiles.yml").read_text())
    return Profile.from_raw_profiles(raw, "strata", ProfileRenderer({}), target_override="prod").credentials


def test_every_trino_setting_of_the_warehouse_is_in_the_dbt_prod_profile():
    from resources.environment import trino_fields
    from resources.settings import load_settings
    from resources.warehouse import Warehouse

    trino_settings = {name for name in Warehouse.model_fields if name.startswith("trino_")}
    assert trino_settings == set(PROFILE_FIELD) | set(NOT_IN_DBT), "map the new setting to dbt or say why not"

    environ = {
        "STRATA_ENV": "prod",
        "STRATA_TRINO_HOST": "trino.internal",
        "STRATA_TRINO_PORT": "8443",
        "STRATA_TRINO_USER": "svc_strata",
        "STRATA_TRINO_CATALOG": "lake",
        "STRATA_TRINO_SCHEMA": "silver_x",
        "STRATA_TRINO_HTTP_SCHEME": "https",
        "STRATA_TRINO_METHOD": "none",
        "STRATA_TRINO_CA_BUNDLE": "/etc/strata/trino-ca.pem",
    }
    warehouse = Warehouse(engine="trino", **trino_fields(load_settings(environ).trino))
    credentials = dbt_prod_credentials(environ)
    for field, credential in PROFILE_FIELD.items():
        if field == "trino_password_secret":
            continue  # a secret's name here, its value in dbt: tests/test_warehouse_reads.py
        value = getattr(credentials, credential)
        assert str(getattr(value, "value", value)) == str(getattr(warehouse, field)), field

    # Without a CA bundle both verify against the system's CAs.
    defaults = dbt_prod_credentials({})
    assert Warehouse(engine="trino", **trino_fields({})).trino_ca_bundle == "" and defaults.cert is True


# ---- which Bronze snapshots a dbt run read ----------------------------------------------------------


@pytest.fixture(scope="module")
def prod_manifest(prod_runs) -> dict:
    return prod_runs["first"].manifest


def model_ids(manifest: dict, names: set[str]) -> set[str]:
    return {uid for uid, n in manifest["nodes"].items() if n["resource_type"] == "model" and n["name"] in names}


def test_the_daily_run_records_only_the_bronze_snapshots_its_sql_read(prod_manifest):
    from assets.transform.dbt_models import bronze_tables_read

    daily = model_ids(prod_manifest, DAILY_MODELS | DAILY_VIEWS)
    # On Trino the daily run pins only the daily views' reads (it rebuilds those views); kpi_daily reads
    # payments through stg_payments, which holds the pin of the run that built it (so do the production
    # marts through stg_well_production, stg_wells and stg_fields).
    assert bronze_tables_read(prod_manifest, daily, "trino") == DAILY_FEEDS
    # On DuckDB views resolve at query time, through the bronze views re-pointed for this run.
    through_views = {"payments", "well_production", "wells", "fields"}
    assert bronze_tables_read(prod_manifest, daily, "duckdb") == DAILY_FEEDS | through_views

    unpartitioned = {uid for uid, n in prod_manifest["nodes"].items() if n["resource_type"] == "model"} - daily
    everything = set(PINS)
    assert bronze_tables_read(prod_manifest, unpartitioned, "trino") == everything - DAILY_FEEDS
    assert bronze_tables_read(prod_manifest, unpartitioned, "duckdb") == everything - DAILY_FEEDS


def test_tests_that_read_a_view_count_as_reads_on_duckdb(prod_manifest):
    from assets.transform.dbt_models import bronze_tables_read

    tests_on_staging_views = {
        uid
        for uid, n in prod_manifest["nodes"].items()
        if n["resource_type"] == "test" and n["depends_on"]["nodes"] == ["model.strata.stg_vehicles"]
    }
    assert tests_on_staging_views
    assert bronze_tables_read(prod_manifest, tests_on_staging_views, "duckdb") == {"vehicles"}
    assert bronze_tables_read(prod_manifest, tests_on_staging_views, "trino") == set()


# ---- personal data: masked in Gold, in clear only for the PII reader role ---------------------------


@pytest.mark.parametrize("scenario", ["first", "incremental"])
def test_each_prod_build_grants_the_restricted_model_to_the_pii_reader_role_only(prod_runs, scenario):
    from sqlglot import exp

    grants = [s for s in prod_runs[scenario].statements if s.lower().startswith("grant")]
    assert grants == [f"grant select on {relation('dim_customers_unmasked')} to role pii_reader"]
    (grant,) = parse_trino(grants[0])
    assert isinstance(grant, exp.Grant)
    assert table_name(grant.args["securable"]) == f"{CATALOG}.gold_restricted.dim_customers_unmasked"


@pytest.mark.parametrize("scenario", ["first", "incremental"])
def test_gold_dim_customers_selects_name_and_email_masked_on_trino(prod_runs, scenario):
    from sqlglot import exp

    sql = next(s for s in prod_runs[scenario].statements if relation("dim_customers") in s and "select" in s.lower())
    select = parse_trino(sql)[0].find(exp.Select)
    projections = {p.alias_or_name: p.this.sql("trino") if isinstance(p, exp.Alias) else p.sql("trino")
                   for p in select.expressions}  # fmt: skip
    assert projections["email"] == "LOWER(TO_HEX(SHA256(TO_UTF8(LOWER(email)))))"
    assert projections["full_name"] == "CASE WHEN full_name IS NULL THEN NULL ELSE '[redacted]' END"
    assert projections["customer_id"] == "customer_id"
