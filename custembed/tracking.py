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
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custembed import lakefs
from custembed.config import ConfigError, TrackingConfig
from custembed.training.spec import lower_is_better

log = logging.getLogger(__name__)

ARTIFACT_PATH = "encoder"
RUN_KEY_TAG = "custembed.train_key"
# model-version tags of a trained encoder (also written to LINEAGE_FILE in its directory)
TAG_RUN_DATE = "custembed.run_date"
TAG_CUTOFF = "custembed.train_cutoff"  # last day of the data it was trained on
TAG_INIT_CHECKPOINT = "custembed.init_checkpoint"  # what a fine-tuned model started from, as configured
TAG_TRAINING_KEY = "custembed.training_key"  # sequences files + training config it was trained from
TAG_HOLDOUT_LAST = "custembed.holdout_last"  # actions cut from the end of each training sequence
TAG_PROMOTION = "custembed.promotion"
LINEAGE_FILE = "custembed_lineage.json"
PROMOTE_POLICIES = ("always", "if_better")
# artifact URIs only the tracking server (or MLflow's own client) resolves: executors get a copy on the lake
_SERVED_SCHEMES = frozenset({"mlflow-artifacts", "runs", "models", "http", "https"})


def promotion(
    policy: str, metrics: Mapping[str, Any], champion: str | None, *, metric: str = "val_loss"
) -> tuple[bool, str]:
    """Whether a new version takes the alias, and why.

    ``if_better``: only when its validation figure ``metric`` (the one its training's early
    stopping followed: ``val_loss``, lower is better, or ``val_accuracy``/``hr@k``/``ndcg@k``,
    higher is better) is not worse than that of the current alias holder (``champion``) on the
    same held-out customers and masks (``champion_<metric>``, computed by the training loop);
    ``always``: every version.
    """
    if policy not in PROMOTE_POLICIES:
        raise ValueError(f"promote policy must be one of {', '.join(PROMOTE_POLICIES)}, got {policy!r}")
    if policy == "always":
        return True, "promote policy is 'always'"
    if champion is None:
        return True, "no version holds the alias yet"
    new, old = metrics.get(metric), metrics.get(f"champion_{metric}")
    if new is None or old is None:
        return False, f"no {metric} of both this version and version {champion} to compare (--promote to force)"
    lower = lower_is_better(metric)
    if (new <= old) if lower else (new >= old):
        sign = "<=" if lower else ">="
        return True, f"{metric} {new:.4f} {sign} {old:.4f} of version {champion} on the same held-out customers"
    sign = ">" if lower else "<"
    return False, f"{metric} {new:.4f} {sign} {old:.4f} of version {champion} on the same held-out customers"


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

    def finish_run(
        self,
        run_id: str,
        metrics: Mapping[str, Any],
        encoder_dir: str,
        encoder_name: str,
        *,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Log final metrics and the encoder, register a new version with ``tags``; returns the version.

        The alias is moved separately (:meth:`record_promotion`).
        """
        client = self.client()
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                client.log_metric(run_id, f"final_{name.replace('@', '_at_')}", float(value))
        # MLflow uploads from a local directory: a remote encoder is fetched first (a local one is used in place)
        with tempfile.TemporaryDirectory(prefix="custembed-artifacts-") as scratch:
            client.log_artifacts(run_id, lakefs.get_dir(encoder_dir, scratch), ARTIFACT_PATH)
        name = self.model_name(encoder_name)
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - MLflow raises its own RestException for "not found"
            client.create_registered_model(name)
        source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_PATH}"
        version = client.create_model_version(name, source, run_id=run_id, tags=dict(tags or {}))
        client.set_terminated(run_id, "FINISHED")
        return str(version.version)

    def record_promotion(self, encoder_name: str, version: str, alias: str, *, promoted: bool, reason: str) -> None:
        """Give ``version`` the ``alias`` when ``promoted``; tag the version with the decision either way."""
        client = self.client()
        name = self.model_name(encoder_name)
        verdict = f"{'took' if promoted else 'did not take'} alias {alias}: {reason}"
        client.set_model_version_tag(name, version, TAG_PROMOTION, verdict[:5000])
        if promoted:
            client.set_registered_model_alias(name, alias, version)

    def alias_version(self, encoder_name: str, alias: str) -> str | None:
        """The version holding ``alias``, or None (no such model or alias yet)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client().get_model_version_by_alias(self.model_name(encoder_name), alias)
        except MlflowException:
            return None
        return str(found.version)

    def versions(self, encoder_name: str) -> list[tuple[str, dict[str, str]]]:
        """(version, tags) of every registered version of an encoder, newest first."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client().search_model_versions(f"name = '{self.model_name(encoder_name)}'")
        except MlflowException:
            return []
        return sorted(((str(v.version), dict(v.tags or {})) for v in found), key=lambda t: -int(t[0]))

    def fail_run(self, run_id: str) -> None:
        self.client().set_terminated(run_id, "FAILED")

    def resolve(self, encoder_name: str, ref: str, *, dst_path: str | None = None) -> tuple[str, str]:
        """(local directory, version) of a registered encoder; ``ref`` is an alias or a version number.

        ``dst_path``: where to download it (default: a temporary directory).
        """
        from mlflow.artifacts import download_artifacts

        version = self._model_version(encoder_name, ref)
        if dst_path is not None:
            Path(dst_path).mkdir(parents=True, exist_ok=True)
        local = download_artifacts(artifact_uri=version.source, tracking_uri=self.uri, dst_path=dst_path)
        return local, str(version.version)

    def encoder_uri(self, encoder_name: str, ref: str, *, staging: str | None = None) -> tuple[str, str]:
        """(URI every executor can load, version) of a registered encoder; ``ref`` is an alias or a version.

        The artifact location itself when it is a store :mod:`custembed.lakefs` reads (the lake's
        ``mlartifacts``, S3, HDFS …); else (artifacts served by the tracking server) a copy under
        the lake URI ``staging``, downloaded once on the driver (without ``staging``: a local
        temporary directory, for use on this machine only).
        """
        from custembed.encoders.base import META_FILE

        version = self._model_version(encoder_name, ref)
        source = str(version.source)
        if lakefs.scheme(source) not in _SERVED_SCHEMES:
            return source, str(version.version)
        if staging is None:
            return self.resolve(encoder_name, str(version.version))
        target = lakefs.join(staging, self.model_name(encoder_name), str(version.version))
        if not lakefs.exists(lakefs.join(target, META_FILE)):
            with tempfile.TemporaryDirectory(prefix="custembed-encoder-") as scratch:
                local, _ = self.resolve(encoder_name, str(version.version), dst_path=scratch)
                lakefs.put_dir(local, target)
        return target, str(version.version)

    def _model_version(self, encoder_name: str, ref: str) -> Any:
        """MLflow's ModelVersion of ``ref`` (alias or version); ``ConfigError`` naming the job to run if none."""
        client = self.client()
        name = self.model_name(encoder_name)
        try:
            return (
                client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
            )
        except Exception as e:
            raise ConfigError(
                f"no registered model {name} with {'version' if ref.isdigit() else 'alias'} {ref!r}: "
                f"run `custembed train --encoder {encoder_name}` first"
            ) from e


def initial_checkpoint(model_dir: str | Path) -> tuple[str, dict[str, Any]]:
    """(checkpoint, encoder config) a fine-tuned encoder saved in ``model_dir`` started from.

    The checkpoint as configured for its training (``LINEAGE_FILE``, a ``package:`` one
    resolved on this machine), else the one its ``custembed_encoder.json`` names.
    """
    import json

    from custembed.encoders.base import META_FILE
    from custembed.jobs.train import resolve_checkpoint

    directory = Path(model_dir)
    config = dict(json.loads((directory / META_FILE).read_text())["config"])
    lineage = directory / LINEAGE_FILE
    recorded = json.loads(lineage.read_text()).get(TAG_INIT_CHECKPOINT) if lineage.is_file() else None
    checkpoint = resolve_checkpoint(recorded) if recorded else config.get("checkpoint")
    if not checkpoint:
        raise ValueError(f"{directory} records no initial checkpoint (not a fine-tuned encoder)")
    return str(checkpoint), {**config, "checkpoint": str(checkpoint)}


def tracking_for(cfg: TrackingConfig, lake_dir: str) -> Tracking:
    """MLflow at ``tracking.uri``, artifacts under the lake; without a URI, a sqlite file in a local lake."""
    lake = lakefs.qualify(lake_dir)
    local = lakefs.local_path(lake)
    if cfg.uri is None and local is None:
        raise ConfigError(
            f"project.lake_dir {lake_dir} is not on the local disk: set tracking.uri (an MLflow tracking server); "
            "the default sqlite file under the lake needs a local lake"
        )
    if local is not None:
        Path(local).mkdir(parents=True, exist_ok=True)
    uri = cfg.uri or f"sqlite:///{Path(local or '.') / 'mlflow.db'}"
    return Tracking(
        uri=uri,
        experiment=cfg.experiment,
        artifact_root=lakefs.mlflow_uri(lakefs.join(lake, "mlartifacts")),
        prefix=cfg.model_prefix,
    )
