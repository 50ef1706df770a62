"""Personal data: contracts and dbt classify the same columns, and no PII value of the demo customers
reaches check metadata, the event log, the quarantine or an audit export."""

import csv
import hashlib
import json

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from assets.bronze.conform import RowRejects
from assets.bronze.contracts import oltp_contracts
from assets.bronze.oltp import build_oltp_asset
from assets.bronze.quarantine import QUARANTINE_TABLE, quarantine_records
from assets.quality.checks import build_quality_checks
from assets.quality.suites import load_suite_files
from audit.cli import main, settings_catalog
from resources.ingestion_guard import IngestionGuard
from resources.settings import DBT_PROJECT_DIR
from resources.source_db import SourceDatabase
from resources.warehouse import Warehouse
from sensors.audit_sensor import AuditCursor, process_finished_runs
from tests.conftest import TEST_START
from tests.support import generate_demo
from tests.test_bronze_oltp import execute


def dbt_pii(path: str, key: str) -> dict[str, dict[str, str]]:
    entries = yaml.safe_load((DBT_PROJECT_DIR / path).read_text())[key]
    if key == "sources":
        entries = entries[0]["tables"]
    return {
        e["name"]: {c["name"]: c["meta"]["pii"] for c in e.get("columns", []) if "pii" in c.get("meta", {})}
        for e in entries
    }


def test_the_contracts_and_the_dbt_yaml_classify_the_same_columns():
    contracts = {name: dict(c.pii) for name, c in oltp_contracts().items() if c.pii}
    assert contracts == {"customers": {"full_name": "name", "email": "email"}}
    sources = dbt_pii("models/staging/_bronze__sources.yml", "sources")
    staging = dbt_pii("models/staging/_staging__models.yml", "models")
    marts = dbt_pii("models/marts/_marts__models.yml", "models")
    assert {t: c for t, c in sources.items() if c} == contracts
    assert staging["stg_customers"] == marts["dim_customers"] == contracts["customers"]


def test_quarantine_records_hold_pii_as_sha256():
    rows = pa.table({"customer_id": [7], "full_name": ["Ada Lovelace"], "email": [None], "city": ["Bern"]})
    violations = pa.table(
        {"row": pa.array([0, 0], pa.int64()), "rule": ["email_not_null", "full_name_x"],
         "column_name": ["email", "full_name"], "offending_value": pa.array([None, "Ada Lovelace"], pa.string())}
    )  # fmt: skip
    records = quarantine_records(
        RowRejects(rows, rows, violations), dataset="customers", source="source table customers",
        row_key_columns=["customer_id"], pii_columns=oltp_contracts()["customers"].pii,
    )  # fmt: skip
    digest = "sha256:" + hashlib.sha256(b"Ada Lovelace").hexdigest()
    assert records.column("offending_value").to_pylist() == [None, digest]
    raw = json.loads(records.column("raw_row")[0].as_py())
    assert raw == {"customer_id": 7, "full_name": digest, "email": None, "city": "Bern"}
    assert "Ada" not in records.to_pandas().to_csv()


# --- a real load of the demo customers: check metadata, event log, quarantine and audit export -----------

CUSTOMERS_SUITE = [
    {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "email", "regex": r"^[^@\s]+@[^@\s]+$"},
     "severity": "critical", "meta": {"check": "email_well_formed"}},
    {"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "full_name", "max_value": 12},
     "severity": "warning", "meta": {"check": "full_name_short"}},
    {"type": "expect_column_most_common_value_to_be_in_set", "kwargs": {"column": "email", "value_set": ["x"]},
     "severity": "warning", "meta": {"check": "email_mode"}},
    {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["segment", "email"]},
     "severity": "warning", "meta": {"check": "one_email_per_segment"}},
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "segment", "value_set": ["private"]},
     "severity": "warning", "meta": {"check": "private_only"}},
]  # fmt: skip


@pytest.mark.slow  # a real load with Great Expectations (its import alone takes seconds)
def test_no_pii_of_the_demo_customers_in_check_metadata_event_log_quarantine_or_audit_export(
    settings, tmp_path, monkeypatch
):
    """The demo customers loaded into Bronze with a GX suite on them that fails on their PII columns, one
    customer quarantined and the run failed by its blocking check: no name or e-mail of any customer is in
    the check metadata, the event log, the quarantine or an audit export (CSV and Parquet, from the audit
    table and from the instance). A check on a non-PII column still shows its sample."""
    generate_demo(settings, TEST_START, 1)
    source = SourceDatabase(url=settings.source_database_url)
    # A malformed e-mail (the blocking check fails), a second account with another's e-mail, and a customer
    # whose creation time cannot be read (quarantined, with the name and e-mail in its raw row).
    first, second, third, fourth = source.read_arrow("SELECT customer_id FROM customers ORDER BY customer_id LIMIT 4")[
        "customer_id"
    ].to_pylist()
    execute(
        settings.source_database_url,
        f"UPDATE customers SET email = 'ada lovelace at example.org' WHERE customer_id = {first}",
        f"UPDATE customers SET email = (SELECT email FROM customers WHERE customer_id = {fourth}), "
        f"segment = (SELECT segment FROM customers WHERE customer_id = {fourth}) WHERE customer_id = {second}",
        f"UPDATE customers SET created_at = 'some day' WHERE customer_id = {third}",
    )
    people = source.read_arrow("SELECT full_name, email FROM customers").to_pylist()
    personal = sorted({r["full_name"] for r in people} | {r["email"] for r in people})
    assert len(personal) > 50

    suites = tmp_path / "expectations"
    suites.mkdir()
    (suites / "bronze.customers.json").write_text(
        json.dumps({"name": "bronze.customers", "expectations": CUSTOMERS_SUITE})
    )
    customers = build_oltp_asset(oltp_contracts()["customers"])
    checks = build_quality_checks({customers.key: None}, load_suite_files(suites))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # what `audit export --source instance` opens
    catalog = settings_catalog()
    resources = {
        "source_db": source,
        "iceberg": catalog,
        "guard": IngestionGuard(data_path=str(tmp_path), min_free_disk_gb=0),
        "warehouse": Warehouse(duckdb_path=str(tmp_path / "unused.duckdb")),
    }
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.materialize([customers, *checks], resources=resources, instance=instance, raise_on_error=False)
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        log = "".join(dg.serialize_value(e) for e in instance.all_logs(result.run_id))
        assert process_finished_runs(instance, catalog, AuditCursor(), secrets=()).written == [result.run_id]

        exports = {}
        for source_name in ("iceberg", "instance"):
            for fmt in ("csv", "parquet"):
                out = tmp_path / f"runs-{source_name}.{fmt}"
                assert main(["export", "--format", fmt, "--out", str(out), "--source", source_name]) == 0
                exports[out.name] = out.read_bytes()
                if fmt == "parquet":
                    exports[out.name + " (read)"] = str(pq.read_table(out).to_pylist()).encode()

    # The checks ran and failed on the PII columns, reporting counts only.
    assert not result.success
    assert {name: e.passed for name, e in evaluations.items()} == {
        "email_well_formed": False,
        "full_name_short": False,
        "email_mode": False,
        "one_email_per_segment": False,
        "private_only": False,
    }
    assert evaluations["email_well_formed"].metadata["unexpected_count"].value == 1
    assert evaluations["one_email_per_segment"].metadata["unexpected_count"].value == 2
    for name in ("email_well_formed", "full_name_short", "email_mode", "one_email_per_segment"):
        assert "unexpected_sample" not in evaluations[name].metadata, name
    assert "observed_value" not in evaluations["email_mode"].metadata
    assert set(evaluations["private_only"].metadata["unexpected_sample"].value) == {"business"}  # not PII: shown

    # The quarantined customer is recorded with its PII hashed.
    quarantine = catalog.load().load_table(QUARANTINE_TABLE).scan().to_arrow()
    assert quarantine.column("rule").to_pylist() == ["created_at_parseable_as_timestamp"]
    assert json.loads(quarantine.column("raw_row")[0].as_py())["email"].startswith("sha256:")

    # Each export holds the run's record (the failed check, the quarantined row) and no personal value.
    with (tmp_path / "runs-instance.csv").open() as f:
        (record,) = list(csv.DictReader(f))
    assert (record["status"], record["rows_quarantined"]) == ("FAILURE", "1")
    assert "bronze/customers:email_well_formed" in record["checks_failed"]
    texts = {"event log": log.encode(), "quarantine": str(quarantine.to_pylist()).encode(), **exports}
    leaked = {where: [p for p in personal if p.encode() in text][:3] for where, text in texts.items()}
    assert {where: values for where, values in leaked.items() if values} == {}
