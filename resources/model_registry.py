"""The model registry: MLflow, with a SQLite backend under `.strata/mlflow/` locally, a tracking server in prod.

Every candidate becomes a registered model version (its run holds the parameters, metrics and the
LightGBM model as an artifact); the production model is the version the `champion` alias points to.
Promotion and rollback both move that alias, nothing else; the forecast loads whatever it points to.

MLflow is imported inside the methods only: it costs seconds to import and must not slow the code
location's load (definitions are loaded by every run worker, sensor tick and UI reload).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from resources.settings import StrataSettings

MODEL_ARTIFACT = "model"
_SETUP_LOCK = threading.Lock()  # MLflow's SQLite schema migration must not run twice at once in a process


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version: its number and the MLflow run that produced it."""

    name: str
    version: int
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class ModelRegistry(dg.ConfigurableResource):
    """Registered versions of the demand model, and the alias that names the production one."""

    tracking_uri: str
    artifact_location: str = ""  # where a new experiment keeps its artifacts; "" lets the server decide
    experiment: str = "strata-demand-model"
    model_name: str = "strata_demand_model"
    champion_alias: str = "champion"

    @classmethod
    def from_settings(cls, settings: StrataSettings) -> ModelRegistry:
        if settings.mlflow_tracking_uri:
            return cls(tracking_uri=settings.mlflow_tracking_uri)
        local = settings.root / "mlflow"
        return cls(tracking_uri=f"sqlite:///{local / 'mlflow.db'}", artifact_location=(local / "artifacts").as_uri())

    # --- MLflow access ---------------------------------------------------------------------------------

    def _client(self):
        import mlflow
        from mlflow.tracking import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        with _SETUP_LOCK:
            client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        return client

    def _experiment_id(self, client) -> str:
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(self.experiment, artifact_location=self.artifact_location or None)

    # --- writing ----------------------------------------------------------------------------------------

    def register_candidate(
        self, booster: Any, *, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str]
    ) -> ModelVersionRef:
        """Log one training run (params, metrics, tags, the model) and register it as a new version.

        The new version gets no alias: it serves nothing until the promotion gate passes.
        """
        import mlflow
        import mlflow.lightgbm

        client = self._client()
        experiment_id = self._experiment_id(client)
        self._ensure_registered_model(client)
        with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            logged = mlflow.lightgbm.log_model(booster, name=MODEL_ARTIFACT, pip_requirements=_pip_requirements())
        source = logged.model_uri
        version = client.create_model_version(self.model_name, source=source, run_id=run.info.run_id, tags=tags)
        return ModelVersionRef(self.model_name, int(version.version), run.info.run_id)

    def _ensure_registered_model(self, client) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(self.model_name)
        except MlflowException as error:  # already there: the usual case after the first model
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def set_champion(self, version: int) -> None:
        """Point the production alias at `version` (promotion, and rollback to an older one)."""
        client = self._client()
        client.get_model_version(self.model_name, str(version))  # fails clearly for a version that does not exist
        client.set_registered_model_alias(self.model_name, self.champion_alias, str(version))

    def tag_version(self, version: int, key: str, value: str) -> None:
        self._client().set_model_version_tag(self.model_name, str(version), key, value)

    # --- reading ----------------------------------------------------------------------------------------

    def champion(self) -> ModelVersionRef | None:
        """The version the production alias points to, or None before the first promotion."""
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            version = client.get_model_version_by_alias(self.model_name, self.champion_alias)
        except MlflowException:  # no registered model yet, or no alias on it
            return None
        return ModelVersionRef(self.model_name, int(version.version), version.run_id)

    def version_tags(self, version: int) -> dict[str, str]:
        return dict(self._client().get_model_version(self.model_name, str(version)).tags)

    def versions(self) -> list[int]:
        client = self._client()
        return sorted(int(v.version) for v in client.search_model_versions(f"name = '{self.model_name}'"))

    def load_booster(self, version: int):
        """The LightGBM booster of a registered version."""
        import mlflow.lightgbm

        self._client()
        return mlflow.lightgbm.load_model(f"models:/{self.model_name}/{version}")

    def run_metrics(self, version: int) -> dict[str, float]:
        client = self._client()
        run_id = client.get_model_version(self.model_name, str(version)).run_id
        return dict(client.get_run(run_id).data.metrics)


def _pip_requirements() -> list[str]:
    """Pinned from the running environment, given explicitly: MLflow's inference would import and probe."""
    from importlib.metadata import version

    return [f"lightgbm=={version('lightgbm')}", f"numpy=={version('numpy')}", f"mlflow=={version('mlflow')}"]
