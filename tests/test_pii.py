"""Personal data classification: contracts and dbt agree, and the quarantine keeps no PII in clear."""

import hashlib
import json

import pyarrow as pa
import yaml

from assets.bronze.conform import RowRejects
from assets.bronze.contracts import oltp_contracts
from assets.bronze.quarantine import quarantine_records
from resources.settings import DBT_PROJECT_DIR


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
