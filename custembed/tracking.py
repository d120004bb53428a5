"""MLflow tracking and model registry: where runs and encoder versions live.

Default: a sqlite store and an artifact directory under the lake; on clusters
``tracking.uri`` points at the team's tracking server. An encoder version is
the directory ``SequenceEncoder.save`` wrote, logged as the run's ``encoder``
artifact and registered as ``<tracking.model_prefix>-<encoder name>`` (a lake
with another action catalogue uses another prefix, so their versions never
mix); the alias (default
``champion``) is what nightly scoring loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custembed.config import ConfigError, TrackingConfig

log = logging.getLogger(__name__)

ARTIFACT_PATH = "encoder"
RUN_KEY_TAG = "custembed.train_key"


def model_name(encoder_name: str, prefix: str = "custembed") -> str:
    return f"{prefix}-{encoder_name}"


@dataclass(frozen=True)
class Tracking:
    uri: str
    experiment: str
    artifact_root: str
    prefix: str = "custembed"

    def model_name(self, encoder_name: str) -> str:
        return model_name(encoder_name, self.prefix)

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self) -> str:
        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        return str(client.create_experiment(self.experiment, artifact_location=self.artifact_root))

    def open_run(self, key: str, params: dict[str, Any]) -> tuple[str, bool]:
        """An unfinished run for ``key`` (a killed training being resumed) or a new one; (run id, resumed)."""
        client = self.client()
        experiment_id = self.experiment_id()
        unfinished = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}' and attributes.status = 'RUNNING'",
            max_results=1,
        )
        if unfinished:
            return str(unfinished[0].info.run_id), True
        run = client.create_run(experiment_id, tags={RUN_KEY_TAG: key}, run_name=key.replace("/", "-"))
        for name, value in params.items():
            client.log_param(run.info.run_id, name, str(value)[:500])
        return str(run.info.run_id), False

    def finish_run(self, run_id: str, metrics: dict[str, Any], encoder_dir: Path, encoder_name: str, alias: str) -> str:
        """Log final metrics and the encoder, register a new version, give it ``alias``; returns the version."""
        client = self.client()
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                client.log_metric(run_id, f"final_{name.replace('@', '_at_')}", float(value))
        client.log_artifacts(run_id, str(encoder_dir), ARTIFACT_PATH)
        name = self.model_name(encoder_name)
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - MLflow raises its own RestException for "not found"
            client.create_registered_model(name)
        source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_PATH}"
        version = client.create_model_version(name, source, run_id=run_id)
        client.set_registered_model_alias(name, alias, version.version)
        client.set_terminated(run_id, "FINISHED")
        return str(version.version)

    def fail_run(self, run_id: str) -> None:
        self.client().set_terminated(run_id, "FAILED")

    def resolve(self, encoder_name: str, ref: str) -> tuple[str, str]:
        """(local directory, version) of a registered encoder; ``ref`` is an alias or a version number."""
        from mlflow.artifacts import download_artifacts

        client = self.client()
        name = self.model_name(encoder_name)
        try:
            version = (
                client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
            )
        except Exception as e:
            raise ConfigError(
                f"no registered model {name} with {'version' if ref.isdigit() else 'alias'} {ref!r}: "
                f"run `custembed train --encoder {encoder_name}` first"
            ) from e
        local = download_artifacts(artifact_uri=version.source, tracking_uri=self.uri)
        return local, str(version.version)


def tracking_for(cfg: TrackingConfig, lake_dir: str) -> Tracking:
    lake = Path(lake_dir).resolve()
    lake.mkdir(parents=True, exist_ok=True)
    uri = cfg.uri or f"sqlite:///{lake / 'mlflow.db'}"
    return Tracking(
        uri=uri, experiment=cfg.experiment, artifact_root=(lake / "mlartifacts").as_uri(), prefix=cfg.model_prefix
    )
