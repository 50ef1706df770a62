"""Secrets by name: the environment / `.env` locally, Vault (KV v2) in prod.

Code asks for a secret by a logical name such as `alerting/webhook_url`; the backend decides where it
lives. The `env` backend reads `STRATA_SECRET_ALERTING__WEBHOOK_URL` (see `resources.settings`); the
`vault` backend reads key `webhook_url` of the KV v2 secret `<vault_path>/alerting`. Values are read
on use and never logged, and never stored in resource config, because Dagster shows that in the UI.
Every value read is registered with `resources.redaction`, which masks it in every text that leaves a
run. `hold_in_memory` adds process-local secrets: a password that a deprecated setting carried inside a
URL is moved there, so it reaches the driver without ever being part of resource config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from resources.redaction import register_secret
from resources.settings import StrataSettings, environment_secret, secret_env_var

KUBERNETES_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"


# name -> value, for secrets this process derived from its own settings (see `hold_in_memory`).
_IN_MEMORY: dict[str, str] = {}


def hold_in_memory(name: str, value: str) -> str:
    """Serve `value` as secret `name` in this process, ahead of the backend; returns the name.

    Every process that loads the definitions derives it again from its own settings, so the value
    never has to travel in run config or storage."""
    register_secret(value)
    _IN_MEMORY[name] = value
    return name


class SecretNotFoundError(KeyError):
    """A secret name the backend does not know; the message names the secret and where it looked."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "secret not found"


def vault_location(name: str, base_path: str) -> tuple[str, str]:
    """(KV path, key) of a secret name: the last segment is the key, the rest a path under `base_path`."""
    folder, _, key = name.strip("/").rpartition("/")
    path = "/".join(part for part in (base_path.strip("/"), folder) if part)
    if not key or not path:
        raise ValueError(f"secret name {name!r} does not map to a Vault path and key (base path {base_path!r})")
    return path, key


class SecretsResource(dg.ConfigurableResource):
    """Looks secrets up by name in the configured backend (`env` or `vault`).

    Vault login uses Kubernetes auth (the pod's service-account token) or AppRole; the AppRole
    secret id is itself a bootstrap secret read from the environment (`STRATA_SECRET_VAULT_SECRET_ID`).
    """

    backend: str = "env"  # env | vault
    dotenv_path: str | None = None
    vault_url: str = ""
    vault_auth: str = "kubernetes"  # kubernetes | approle
    vault_role: str = "strata"
    vault_role_id: str = ""
    vault_secret_id_name: str = "vault_secret_id"
    vault_auth_mount: str = ""
    vault_kv_mount: str = "secret"
    vault_path: str = "strata"
    vault_namespace: str = ""
    vault_timeout_seconds: float = 10.0
    vault_ca_bundle: str = ""
    kubernetes_jwt_path: str = KUBERNETES_JWT_PATH

    _client: Any = PrivateAttr(default=None)
    _kv_cache: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)

    def get(self, name: str) -> str:
        """The secret's value; raises `SecretNotFoundError` (naming the secret, not a value) when absent."""
        value = self.get_optional(name)
        if value is None:
            raise SecretNotFoundError(f"secret {name!r} not found in the {self.backend} backend{self._where(name)}")
        return value

    def get_optional(self, name: str) -> str | None:
        """The secret's value or None; the value is registered for scrubbing before it is returned."""
        if name in _IN_MEMORY:
            value: str | None = _IN_MEMORY[name]
        elif self.backend == "env":
            value = environment_secret(name, Path(self.dotenv_path) if self.dotenv_path else None)
        elif self.backend == "vault":
            value = self._vault_get(name)
        else:
            raise ValueError(f"unknown secrets backend {self.backend!r}; use 'env' or 'vault'")
        register_secret(value)
        return value

    def _where(self, name: str) -> str:
        if self.backend == "vault":
            path, key = vault_location(name, self.vault_path)
            return f" (KV v2 {self.vault_kv_mount}/{path}, key {key})"
        return f" (environment variable {secret_env_var(name)} or {self.dotenv_path or 'no .env file'})"

    def _vault_get(self, name: str) -> str | None:
        path, key = vault_location(name, self.vault_path)
        if path not in self._kv_cache:
            import hvac.exceptions

            try:
                response = self._vault_client().secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.vault_kv_mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                return None
            self._kv_cache[path] = dict(response["data"]["data"] or {})
            dg.get_dagster_logger().debug(f"read Vault secret {self.vault_kv_mount}/{path} (keys only are logged)")
        value = self._kv_cache[path].get(key)
        return None if value is None else str(value)

    def _vault_client(self) -> Any:
        """An authenticated hvac client, created once per resource instance (one login per run or tick)."""
        if self._client is not None:
            return self._client
        import hvac

        if not self.vault_url:
            raise ValueError("the vault secrets backend needs vault_url (STRATA_VAULT_URL)")
        client = hvac.Client(
            url=self.vault_url,
            namespace=self.vault_namespace or None,
            timeout=self.vault_timeout_seconds,
            verify=self.vault_ca_bundle or True,
        )
        if self.vault_auth not in ("kubernetes", "approle"):
            raise ValueError(f"unknown Vault auth method {self.vault_auth!r}; use 'kubernetes' or 'approle'")
        if self.vault_auth == "kubernetes":
            jwt = Path(self.kubernetes_jwt_path).read_text().strip()
            register_secret(jwt)
            client.auth.kubernetes.login(
                role=self.vault_role, jwt=jwt, mount_point=self.vault_auth_mount or "kubernetes"
            )
        else:
            secret_id = environment_secret(
                self.vault_secret_id_name, Path(self.dotenv_path) if self.dotenv_path else None
            )
            register_secret(secret_id)
            if not self.vault_role_id or not secret_id:
                raise ValueError(
                    "AppRole auth needs vault_role_id (STRATA_VAULT_ROLE_ID) and a secret id in "
                    f"the environment secret {self.vault_secret_id_name!r}"
                )
            client.auth.approle.login(
                role_id=self.vault_role_id, secret_id=secret_id, mount_point=self.vault_auth_mount or "approle"
            )
        register_secret(client.token)  # the session token is as good as the credentials behind it
        self._client = client
        return client


def build_secrets_resource(settings: StrataSettings) -> SecretsResource:
    """The secrets backend for this environment (`STRATA_SECRETS_BACKEND`, `STRATA_VAULT_*`)."""
    vault = settings.vault
    return SecretsResource(
        backend=settings.secrets_backend,
        dotenv_path=str(settings.dotenv_path),
        vault_url=vault.get("url", ""),
        vault_auth=vault.get("auth", "kubernetes"),
        vault_role=vault.get("role", "strata"),
        vault_role_id=vault.get("role_id", ""),
        vault_auth_mount=vault.get("auth_mount", ""),
        vault_kv_mount=vault.get("kv_mount", "secret"),
        vault_path=vault.get("path", "strata"),
        vault_namespace=vault.get("namespace", ""),
        vault_ca_bundle=vault.get("ca_bundle", ""),
        kubernetes_jwt_path=vault.get("jwt_path", KUBERNETES_JWT_PATH),
    )
