"""The one scrubber (resources/redaction.py): every secret form, values read from the secrets backend,
and resources that hold secret names instead of values."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resources.environment import SOURCE_URL_PASSWORD_SECRET, source_database
from resources.iceberg import IcebergCatalog, IcebergCatalogWithSecrets
from resources.redaction import (
    MASK,
    scrub,
    scrub_url,
    split_url_password,
    strip_url_credentials,
    with_url_password,
)
from resources.secrets import SecretsResource
from resources.settings import load_settings
from resources.source_db import SourceDatabase, SourceDatabaseWithPassword

SECRET = "Xk9-planted-Q7z"
BASIC = base64.b64encode(f"strata:{SECRET}".encode()).decode()

# (text carrying SECRET, what must remain of it). Each line is a form that reached logs or alerts before.
FORMS = [
    (f"could not connect to postgresql://strata:{SECRET}@db:5432/oltp", "postgresql://strata:***@db:5432/oltp"),
    (f"postgresql://strata:p@ss{SECRET}@db:5432/oltp", "postgresql://strata:***@db:5432/oltp"),  # '@' inside
    (f"(mysql+pymysql://u:{SECRET}@h)", "(mysql+pymysql://u:***@h)"),
    (f"postgresql://strata@db/oltp?sslmode=require&password={SECRET}", "?sslmode=require&password=***"),
    (f"env PGPASSWORD={SECRET} psql", "PGPASSWORD=***"),
    (f"config {{'password': '{SECRET}', 'user': 'strata'}}", "{'password': '***', 'user': 'strata'}"),
    (f'{{"password": "{SECRET}"}}', '{"password": "***"}'),
    (f"client_secret={SECRET}&grant_type=client_credentials", "client_secret=***&grant_type"),
    (f"aws_secret_access_key={SECRET}", "aws_secret_access_key=***"),
    (f"AWS_SECRET_ACCESS_KEY: {SECRET}", "AWS_SECRET_ACCESS_KEY: ***"),
    (f"s3.secret-access-key={SECRET}", "s3.secret-access-key=***"),
    (f"api_key='{SECRET}'", "api_key='***'"),
    (f"X-Api-Key: {SECRET}", "X-Api-Key: ***"),
    (f"token={SECRET}", "token=***"),
    (f"Authorization: Basic {BASIC}", "Authorization: Basic ***"),
    (f"headers={{'Authorization': 'Basic {BASIC}'}}", "{'Authorization': 'Basic ***'}"),
    (f"Authorization: Bearer {SECRET}.payload.sig", "Authorization: Bearer ***"),
    (f"sent bearer {SECRET}", "bearer ***"),
    (f"vault token hvs.{SECRET}abc", "vault token ***"),
    (f"POST https://hooks.slack.com/services/T0/B0/{SECRET}", "https://hooks.slack.com/services/***"),
]


@pytest.mark.parametrize(("text", "kept"), FORMS, ids=[f"form{i}" for i in range(len(FORMS))])
def test_every_secret_form_is_masked(text: str, kept: str):
    scrubbed = scrub(text)
    assert SECRET not in scrubbed and BASIC not in scrubbed
    assert kept in scrubbed


def test_ordinary_text_is_left_alone():
    text = (
        "FATAL: password authentication failed for user strata; primary_key: station_id; "
        "no table named stations in sqlite:///tmp/oltp.sqlite; s3://bucket/key and http://host/path; "
        "secret 'source_db/password' not found"
    )
    assert scrub(text) == text


def test_a_value_read_through_the_secrets_resource_is_masked_wherever_it_appears(tmp_path: Path):
    value = "no telltale/form+5be1"  # a Vault or .env value has no form a pattern could find
    assert scrub(f"driver said {value}") == f"driver said {value}"
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"STRATA_SECRET_WAREHOUSE__API='{value}'\n")
    assert SecretsResource(dotenv_path=str(dotenv)).get("warehouse/api") == value
    # Registered when read: masked as it is, and as it appears inside URLs and form bodies.
    assert scrub(f"driver said {value}; in a url {quote(value, safe='')}; in a form {quote_plus(value)}") == (
        f"driver said {MASK}; in a url {MASK}; in a form {MASK}"
    )


def test_secret_looking_environment_variables_are_masked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "env-token-77aa")
    assert scrub("header was env-token-77aa") == f"header was {MASK}"


URL_PASSWORDS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)


@given(URL_PASSWORDS)
def test_a_password_put_into_a_url_comes_back_out_and_is_masked(password: str):
    url = with_url_password("postgresql://strata@db.internal:5432/oltp?sslmode=require", password)
    assert split_url_password(url) == ("postgresql://strata@db.internal:5432/oltp?sslmode=require", password)
    assert scrub_url(url) == "postgresql://strata:***@db.internal:5432/oltp?sslmode=require"
    assert (
        scrub(f"failed: {url} refused")
        == "failed: postgresql://strata:***@db.internal:5432/oltp?sslmode=require refused"
    )


@given(
    user=st.none() | URL_PASSWORDS,
    password=st.none() | URL_PASSWORDS,
    key_name=st.sampled_from(["api_key", "apiKey", "access_token", "X-Api-Key", "client_secret"]),
    key=st.none() | URL_PASSWORDS,
)
def test_credentials_of_an_endpoint_url_are_cut_out_and_the_rest_kept(
    user: str | None, password: str | None, key_name: str, key: str | None
):
    """The OpenLineage URL setting: nothing of the userinfo or of a secret-named parameter survives."""
    base = "https://marquez.example:5000/api?env=prod"
    url = with_url_password(base, password) if password else base
    if user:
        url = url.replace("https://", f"https://{quote(user, safe='')}{'' if password else '@'}", 1)
    if key is not None:
        url += f"&{key_name}={quote_plus(key)}"
    stripped, removed = strip_url_credentials(url)
    assert stripped == base
    assert removed == (["user info"] if user or password else []) + (
        [f"query parameter {key_name}"] if key is not None else []
    )


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////srv/strata/source/oltp.sqlite",
        "postgresql://postgres:@/postgres?host=/tmp/pg/data",  # an empty password is none
        "postgresql://strata@db:5432/oltp?sslmode=require",
    ],
)
def test_urls_without_a_password_are_shown_as_given(url: str):
    assert scrub_url(url) == url
    assert split_url_password(url) == (url, None)
    assert SourceDatabase(url=url).connection_url() == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://strata:pl%40nted@db:5432/oltp?sslmode=require",
        "postgresql://strata@db:5432/oltp?sslmode=require&password=pl%40nted",
    ],
)
def test_a_password_in_strata_source_url_moves_into_an_in_memory_secret(url: str, tmp_path: Path):
    """Backwards compatibility: the password leaves the URL (and so resource config) for this process's memory."""
    settings = load_settings({"STRATA_ROOT": str(tmp_path), "STRATA_SOURCE_URL": url})
    source = source_database(settings, SecretsResource(dotenv_path=str(tmp_path / "none.env")))
    assert isinstance(source, SourceDatabaseWithPassword)
    assert source.url == "postgresql://strata@db:5432/oltp?sslmode=require"
    assert source.password_secret == SOURCE_URL_PASSWORD_SECRET
    assert "pl@nted" not in json.dumps(source._get_non_default_public_field_values(), default=str)
    assert source.connection_url() == "postgresql://strata:pl%40nted@db:5432/oltp?sslmode=require"
    assert "pl@nted" not in scrub("driver echoed pl@nted")


def test_the_source_password_is_a_secret_name_read_at_use(tmp_path: Path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("STRATA_SECRET_SOURCE_DB__PASSWORD=from-backend\n")
    settings = load_settings(
        {
            "STRATA_ROOT": str(tmp_path),
            "STRATA_SOURCE_URL": "postgresql://strata@db:5432/oltp",
            "STRATA_SOURCE_PASSWORD_SECRET": "source_db/password",
        }
    )
    source = source_database(settings, SecretsResource(dotenv_path=str(dotenv)))
    assert source.connection_url() == "postgresql://strata:from-backend@db:5432/oltp"
    assert source.display_url == "postgresql://strata@db:5432/oltp"


def test_a_source_database_refuses_a_password_in_its_config():
    source = SourceDatabase(url="postgresql://strata@db/oltp?password=in-config")
    with pytest.raises(ValueError, match=r"postgresql://strata@db/oltp\?password=\*\*\* carries a password"):
        source.read_arrow("SELECT 1")


def test_iceberg_credentials_are_secret_names_resolved_when_the_catalog_opens(tmp_path: Path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("STRATA_SECRET_ICEBERG__S3_SECRET_ACCESS_KEY=s3-key-from-backend\n")
    settings = load_settings(
        {
            "STRATA_ROOT": str(tmp_path),
            "STRATA_ICEBERG_PROP_S3__ACCESS_KEY_ID": "AKIDPLAIN",
            "STRATA_ICEBERG_SECRET_PROP_S3__SECRET_ACCESS_KEY": "iceberg/s3_secret_access_key",
        }
    )
    catalog = IcebergCatalog.from_settings(settings, SecretsResource(dotenv_path=str(dotenv)))
    assert isinstance(catalog, IcebergCatalogWithSecrets)
    assert catalog.properties == {"s3.access_key_id": "AKIDPLAIN"}
    assert catalog.secret_properties == {"s3.secret-access-key": "iceberg/s3_secret_access_key"}
    assert "s3-key-from-backend" not in json.dumps(catalog._get_non_default_public_field_values(), default=str)
    assert catalog.load().properties["s3.secret-access-key"] == "s3-key-from-backend"


def test_a_deprecated_plain_iceberg_secret_property_moves_out_of_config(tmp_path: Path):
    settings = load_settings(
        {"STRATA_ROOT": str(tmp_path), "STRATA_ICEBERG_PROP_S3__SECRET_ACCESS_KEY": "plain-s3-key"}
    )
    catalog = IcebergCatalog.from_settings(settings, SecretsResource(dotenv_path=str(tmp_path / "none.env")))
    assert catalog.properties == {}
    assert catalog.secret_properties == {"s3.secret-access-key": "iceberg/s3.secret-access-key"}
    assert catalog.load().properties["s3.secret-access-key"] == "plain-s3-key"
    assert scrub("echo plain-s3-key") == f"echo {MASK}"
