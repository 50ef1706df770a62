"""Reading Silver/Gold through `Warehouse.query_arrow` / `column_names` on both engines.

DuckDB runs for real on a temporary file. Trino cannot run here, so the real `trino` client talks to a
stand-in coordinator on 127.0.0.1 (tests/trino_server.py): the tests check the SQL text the client
sends with its parameters bound, the session headers, basic auth over TLS with the password from the
secrets resource, the Arrow result, and that errors name the SQL but never the password.
"""

from __future__ import annotations

import base64
import json
import traceback
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest
from dagster_dbt import DbtProject

from assets.ml.demand_forecast import FEATURES_SQL, read_features
from assets.quality.checks import read_rows
from assets.quality.suites import parse_suite_file
from resources.environment import build_resources, trino_fields
from resources.secrets import SecretNotFoundError, SecretsResource
from resources.settings import DBT_PROJECT_DIR, load_settings
from resources.trino_results import rows_to_arrow, trino_arrow_type
from resources.warehouse import Warehouse, WarehouseQueryError, relation_name
from tests.trino_server import StubResult, TrinoStub, serve_trino

PASSWORD = "tr1no-S3cret-pass"
PASSWORD_VAR = "STRATA_SECRET_TRINO__PASSWORD"
DAY = dg.TimeWindow(datetime(2026, 10, 1), datetime(2026, 10, 2))

FEATURE_COLUMNS = [
    ("feature_date", "date"),
    ("start_station_id", "bigint"),
    ("hour_of_day", "bigint"),
    ("bookings_started", "bigint"),
    ("capacity", "integer"),
]
FEATURE_ROWS = [
    {"feature_date": date(2026, 10, 1), "start_station_id": 1, "hour_of_day": 8, "bookings_started": 3, "capacity": 10},
    {"feature_date": date(2026, 10, 1), "start_station_id": 2, "hour_of_day": 9, "bookings_started": 0, "capacity": 4},
]


def executed_immediately(sql: str, bound: str) -> str:
    """What trino-python-client 0.340 POSTs for a query with parameters (non-legacy flow)."""
    return "EXECUTE IMMEDIATE '" + sql.replace("'", "''") + "' USING " + bound


def write_suite(folder: Path, name: str, meta: dict) -> Path:
    """A Silver suite that reads three of the table's columns."""
    expectations = [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "vehicle_id"}, "meta": {"check": "a"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "speed_kmh", "min_value": 0},
         "meta": {"check": "b"}},
    ]  # fmt: skip
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"name": name, "meta": {"strata": meta}, "expectations": expectations}))
    return path


# --- DuckDB -------------------------------------------------------------------------------------------


@pytest.fixture
def duckdb_warehouse(tmp_path: Path) -> Warehouse:
    """A real warehouse file with the two Gold inputs of the forecast and a Silver telemetry table."""
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA gold")
        con.execute("CREATE SCHEMA silver")
        con.execute(
            "CREATE TABLE gold.demand_features_hourly (feature_date DATE, start_station_id BIGINT, "
            "hour_of_day INTEGER, bookings_started BIGINT)"
        )
        con.execute(
            "INSERT INTO gold.demand_features_hourly VALUES "
            "('2026-09-30', 1, 7, 5), ('2026-10-01', 1, 8, 3), ('2026-10-01', 2, 9, 0), ('2026-10-02', 1, 8, 9)"
        )
        con.execute("CREATE TABLE gold.dim_stations (station_id BIGINT, name VARCHAR, capacity INTEGER)")
        con.execute("INSERT INTO gold.dim_stations VALUES (1, 'Quay', 10), (2, 'O''Brien Sq', 4)")
        con.execute(
            "CREATE TABLE silver.telemetry_clean (vehicle_id BIGINT, ts TIMESTAMP, reading_date DATE, "
            "speed_kmh DOUBLE, fault_code VARCHAR)"
        )
        con.execute(
            "INSERT INTO silver.telemetry_clean VALUES "
            "(7, '2026-09-30 23:59:59', '2026-09-30', 10.5, NULL), "
            "(7, '2026-10-01 00:00:00', '2026-10-01', 12.0, 'E1'), "
            "(8, '2026-10-01 23:00:00', '2026-10-01', 0.0, NULL), "
            "(8, '2026-10-02 00:00:00', '2026-10-02', 3.0, NULL)"
        )
    return Warehouse(engine="duckdb", duckdb_path=str(path), extension_dir=str(tmp_path / "duckdb_extensions"))


def test_duckdb_column_names_and_query_arrow_return_exact_names_and_rows(duckdb_warehouse):
    stations = relation_name("gold", "dim_stations")
    assert stations == '"gold"."dim_stations"'
    assert duckdb_warehouse.column_names(stations) == ["station_id", "name", "capacity"]
    table = duckdb_warehouse.query_arrow(f'SELECT "name", "capacity" FROM {stations} WHERE "capacity" < ?', [5])
    assert table.schema == pa.schema([("name", pa.string()), ("capacity", pa.int32())])
    assert table.to_pylist() == [{"name": "O'Brien Sq", "capacity": 4}]


def test_duckdb_read_features_reads_only_the_window(duckdb_warehouse):
    features = read_features(duckdb_warehouse, date(2026, 10, 1), date(2026, 10, 2))
    assert features.column_names == [name for name, _ in FEATURE_COLUMNS]
    assert features.schema.field("hour_of_day").type == pa.int64()
    assert sorted(features.to_pylist(), key=lambda r: r["start_station_id"]) == FEATURE_ROWS


@pytest.mark.parametrize(
    ("meta", "vehicles", "columns"),
    [
        ({"date_column": "reading_date"}, [7, 8], ["vehicle_id", "reading_date", "speed_kmh"]),
        ({"time_column": "ts"}, [7, 8], ["vehicle_id", "ts", "speed_kmh"]),
        ({}, [7, 7, 8, 8], ["vehicle_id", "speed_kmh"]),
    ],
)
def test_duckdb_read_rows_reads_the_suites_columns_for_the_window(duckdb_warehouse, tmp_path, meta, vehicles, columns):
    suite = parse_suite_file(write_suite(tmp_path, "silver.telemetry_clean", meta))
    rows = read_rows(suite, DAY, iceberg=None, warehouse=duckdb_warehouse)
    # Table order; fault_code is never read, the partition column only to split a range by partition.
    assert list(rows.columns) == columns
    assert sorted(rows["vehicle_id"].tolist()) == vehicles


def test_duckdb_errors_name_the_sql(duckdb_warehouse):
    with pytest.raises(WarehouseQueryError, match=r'(?s)DuckDB query failed .*SELECT \* FROM "gold"."nope" LIMIT 0'):
        duckdb_warehouse.column_names(relation_name("gold", "nope"))


# --- Trino --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables: keep the client's requests on 127.0.0.1."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def tls_trino(tmp_path: Path):
    with serve_trino(tmp_path / "tls", tls=True, user="analyst", password=PASSWORD) as stub:
        yield stub


@pytest.fixture
def plain_trino(tmp_path: Path):
    with serve_trino(tmp_path / "plain") as stub:
        yield stub


def env_secrets(monkeypatch: pytest.MonkeyPatch, password: str = PASSWORD) -> SecretsResource:
    monkeypatch.setenv(PASSWORD_VAR, password)
    return SecretsResource(backend="env", dotenv_path=None)


def ldap_warehouse(stub: TrinoStub, secrets: SecretsResource, **fields) -> Warehouse:
    return Warehouse(
        engine="trino",
        secrets=secrets,
        trino_host="127.0.0.1",
        trino_port=stub.port,
        trino_http_scheme="https",
        trino_ca_bundle=stub.ca_file,
        trino_method="ldap",
        trino_user="analyst",
        trino_catalog="lake",
        trino_schema="gold",
        **fields,
    )


def basic_auth(request) -> str:
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(encoded).decode()


def test_trino_read_features_binds_parameters_and_authenticates_with_the_secret(tls_trino, monkeypatch):
    tls_trino.result = StubResult(
        columns=FEATURE_COLUMNS, rows=[["2026-10-01", 1, 8, 3, 10], ["2026-10-01", 2, 9, 0, 4]]
    )
    warehouse = ldap_warehouse(tls_trino, env_secrets(monkeypatch))
    assert PASSWORD not in warehouse.model_dump_json()  # resource config is shown in the UI

    features = read_features(warehouse, date(2026, 10, 1), date(2026, 10, 2))

    assert tls_trino.statements == [executed_immediately(FEATURES_SQL, "DATE '2026-10-01',DATE '2026-10-02'")]
    post = next(r for r in tls_trino.requests if r.method == "POST")
    assert post.path == "/v1/statement"
    assert post.headers["x-trino-user"] == "analyst"
    assert post.headers["x-trino-catalog"] == "lake"
    assert post.headers["x-trino-schema"] == "gold"
    assert post.headers["x-trino-source"] == "strata"
    assert {basic_auth(r) for r in tls_trino.requests} == {f"analyst:{PASSWORD}"}  # POST and every page GET
    assert [r.method for r in tls_trino.requests] == ["POST", "GET", "GET"]
    assert features.schema == pa.schema(
        [
            ("feature_date", pa.date32()),
            ("start_station_id", pa.int64()),
            ("hour_of_day", pa.int64()),
            ("bookings_started", pa.int64()),
            ("capacity", pa.int32()),
        ]
    )
    assert features.to_pylist() == FEATURE_ROWS


@pytest.mark.parametrize(
    ("meta", "bound"),
    [
        ({"date_column": "reading_date"}, "DATE '2026-10-01',DATE '2026-10-02'"),
        ({"time_column": "ts"}, "TIMESTAMP '2026-10-01 00:00:00.000000',TIMESTAMP '2026-10-02 00:00:00.000000'"),
    ],
)
def test_trino_read_rows_asks_for_the_columns_then_reads_the_window(tls_trino, monkeypatch, tmp_path, meta, bound):
    table_columns = [("vehicle_id", "bigint"), ("ts", "timestamp(6)"), ("reading_date", "date"),
                     ("speed_kmh", "double"), ("fault_code", "varchar")]  # fmt: skip
    tls_trino.queue = [
        StubResult(columns=table_columns),
        StubResult(columns=[("vehicle_id", "bigint"), ("speed_kmh", "double")], rows=[[7, 12.0], [8, 0.0]]),
    ]
    suite = parse_suite_file(write_suite(tmp_path, "silver.telemetry_clean", meta))
    rows = read_rows(suite, DAY, iceberg=None, warehouse=ldap_warehouse(tls_trino, env_secrets(monkeypatch)))

    column = next(iter(meta.values()))
    select = (
        f'SELECT "vehicle_id", "{column}", "speed_kmh" FROM "silver"."telemetry_clean" '
        f'WHERE "{column}" >= ? AND "{column}" < ?'
    )
    assert tls_trino.statements == [
        'SELECT * FROM "silver"."telemetry_clean" LIMIT 0',  # no parameters: sent as it is
        executed_immediately(select, bound),
    ]
    assert rows.to_dict("list") == {"vehicle_id": [7, 8], "speed_kmh": [12.0, 0.0]}


def test_trino_legacy_prepared_statements_prepare_execute_and_deallocate(plain_trino):
    plain_trino.result = StubResult(
        columns=[("station_id", "bigint"), ("opened", "timestamp(3) with time zone"), ("fee", "decimal(5,2)")],
        rows=[[1, "2026-10-01 08:30:00.000 UTC", "1.50"]],
    )
    warehouse = Warehouse(
        engine="trino", trino_host="127.0.0.1", trino_port=plain_trino.port, trino_legacy_prepared_statements=True
    )
    sql = 'SELECT "station_id", "opened", "fee" FROM "gold"."dim_stations" WHERE "name" = ?'
    table = warehouse.query_arrow(sql, ["O'Brien Sq"])

    prepare, execute, deallocate = plain_trino.statements
    name = prepare.split()[1]
    assert prepare == f"PREPARE {name} FROM {sql}"
    assert execute == f"EXECUTE {name} USING 'O''Brien Sq'"
    assert deallocate == f"DEALLOCATE PREPARE {name}"
    assert plain_trino.executed == [f"{sql} USING 'O''Brien Sq'"]
    assert not any("authorization" in r.headers for r in plain_trino.requests)  # method none
    assert table.schema == pa.schema(
        [("station_id", pa.int64()), ("opened", pa.timestamp("us", tz="UTC")), ("fee", pa.decimal128(5, 2))]
    )
    assert table.to_pylist()[0]["opened"] == datetime.fromisoformat("2026-10-01T08:30:00+00:00")
    assert str(table.to_pylist()[0]["fee"]) == "1.50"


@pytest.mark.parametrize(
    ("secret", "error", "expected"),
    [
        (PASSWORD, {"message": "line 1:15: Table 'lake.gold.nope' does not exist", "errorCode": 46,
                    "errorName": "TABLE_NOT_FOUND", "errorType": "USER_ERROR"}, "TABLE_NOT_FOUND"),
        # A server message that quotes the credential is scrubbed before it reaches logs and the UI.
        (PASSWORD, {"message": f"bad credentials password={PASSWORD}", "errorCode": 1,
                    "errorName": "GENERIC_USER_ERROR", "errorType": "USER_ERROR"}, "password=\\*\\*\\*"),
        ("wrong-password", None, "error 401"),
    ],
)  # fmt: skip
def test_trino_errors_name_the_sql_and_never_the_password(tls_trino, monkeypatch, secret, error, expected):
    tls_trino.error = error
    warehouse = ldap_warehouse(tls_trino, env_secrets(monkeypatch, secret))
    with pytest.raises(WarehouseQueryError, match=expected) as raised:
        warehouse.column_names(relation_name("gold", "nope"))
    text = "".join(traceback.format_exception(raised.value))
    assert 'SELECT * FROM "gold"."nope" LIMIT 0' in str(raised.value)
    assert PASSWORD not in text and secret not in text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_trino_refuses_to_send_the_password_over_plain_http(plain_trino, monkeypatch):
    warehouse = Warehouse(
        engine="trino",
        secrets=env_secrets(monkeypatch),
        trino_host="127.0.0.1",
        trino_port=plain_trino.port,
        trino_method="ldap",
    )
    with pytest.raises(WarehouseQueryError, match="TLS/SSL is required") as raised:
        warehouse.query_arrow("SELECT 1")
    assert PASSWORD not in str(raised.value)
    assert plain_trino.requests == []


def test_trino_without_the_password_secret_names_the_secret(tls_trino, monkeypatch):
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    warehouse = ldap_warehouse(tls_trino, SecretsResource(backend="env", dotenv_path=None))
    with pytest.raises(SecretNotFoundError, match="trino/password"):
        warehouse.query_arrow("SELECT 1")
    assert tls_trino.requests == []


def test_trino_types_map_to_arrow_and_unknown_ones_are_inferred():
    assert trino_arrow_type("varchar(10)") == pa.string()
    assert trino_arrow_type("timestamp(6)") == pa.timestamp("us")
    assert trino_arrow_type("decimal(38,0)") == pa.decimal128(38, 0)
    assert trino_arrow_type("array(bigint)") is None
    empty = rows_to_arrow([("n", "bigint"), ("d", "date")], [])
    assert empty.schema == pa.schema([("n", pa.int64()), ("d", pa.date32())])  # typed even without rows
    inferred = rows_to_arrow([("tags", "array(varchar)")], [[["a", "b"]]])
    assert inferred.to_pylist() == [{"tags": ["a", "b"]}]


# --- environment ----------------------------------------------------------------------------------------


def test_prod_resources_fill_the_trino_fields_without_the_password(tmp_path):
    settings = load_settings(
        {
            "STRATA_ENV": "prod",
            "STRATA_ROOT": str(tmp_path),
            "STRATA_TRINO_METHOD": "ldap",
            "STRATA_TRINO_HOST": "trino.internal",
            "STRATA_TRINO_PORT": "8443",
            "STRATA_TRINO_HTTP_SCHEME": "https",
            "STRATA_TRINO_USER": "svc_strata",
            "STRATA_TRINO_PASSWORD": PASSWORD,  # dbt's variable: must not reach resource config
            "STRATA_TRINO_CATALOG": "lake",
        }
    )
    resources = build_resources(settings, DbtProject(project_dir=DBT_PROJECT_DIR, target="prod"))
    warehouse = resources["warehouse"]
    assert (warehouse.engine, warehouse.trino_host, warehouse.trino_port, warehouse.trino_http_scheme) == (
        "trino",
        "trino.internal",
        8443,
        "https",
    )
    assert (warehouse.trino_method, warehouse.trino_user, warehouse.trino_catalog, warehouse.trino_schema) == (
        "ldap",
        "svc_strata",
        "lake",
        "silver",
    )
    assert warehouse.trino_password_secret == "trino/password"
    assert warehouse.secrets is resources["secrets"]
    assert PASSWORD not in warehouse.model_dump_json()


def test_trino_fields_default_to_the_dbt_profile_and_refuse_unknown_methods():
    assert trino_fields({}) == {
        "trino_host": "trino",
        "trino_port": 8080,
        "trino_user": "strata",
        "trino_catalog": "iceberg",
        "trino_schema": "silver",
        "trino_http_scheme": "http",
        "trino_method": "none",
        "trino_password_secret": "trino/password",
        "trino_ca_bundle": "",
        "trino_legacy_prepared_statements": False,
    }
    with pytest.raises(ValueError, match="STRATA_TRINO_METHOD 'kerberos'"):
        trino_fields({"method": "kerberos"})


def test_dbt_gets_the_run_id_and_on_trino_the_password_from_the_secrets_backend(tls_trino, monkeypatch, tmp_path):
    import os

    from assets.transform.dbt_models import dbt_environment, subprocess_environment

    monkeypatch.delenv("STRATA_TRINO_PASSWORD", raising=False)
    trino = ldap_warehouse(tls_trino, env_secrets(monkeypatch))
    assert dbt_environment("run-1", trino) == {"STRATA_DAGSTER_RUN_ID": "run-1", "STRATA_TRINO_PASSWORD": PASSWORD}
    local = Warehouse(engine="duckdb", duckdb_path=str(tmp_path / "w.duckdb"), duckdb_temp_directory="/spill")
    assert dbt_environment("run-2", local) == {
        "STRATA_DAGSTER_RUN_ID": "run-2",
        # DuckDB's limits, read by dbt/profiles.yml (tests/test_duckdb_limits.py checks they apply)
        "STRATA_DUCKDB_MEMORY_LIMIT": "2GB",
        "STRATA_DUCKDB_THREADS": "2",
        "STRATA_DUCKDB_TEMP_DIRECTORY": "/spill",
    }

    monkeypatch.setenv("STRATA_DAGSTER_RUN_ID", "outer")
    with subprocess_environment(dbt_environment("run-1", trino)):
        assert (os.environ["STRATA_DAGSTER_RUN_ID"], os.environ["STRATA_TRINO_PASSWORD"]) == ("run-1", PASSWORD)
    assert os.environ["STRATA_DAGSTER_RUN_ID"] == "outer" and "STRATA_TRINO_PASSWORD" not in os.environ
