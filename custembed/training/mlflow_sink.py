"""Rank 0's link to an existing MLflow run: parameters once, metrics in batches.

MLflow is optional (imported only when a run is configured) and a failed request
costs a warning, never the training run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from custembed.training.distributed import DistContext
from custembed.training.spec import TrainSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


class MlflowSink:
    """Rank 0's link to an existing MLflow run; does nothing when no run is configured."""

    def __init__(self, spec: TrainSpec, ctx: DistContext) -> None:
        self.client: MlflowClient | None = None
        self.run_id = spec.mlflow_run_id
        if ctx.is_main and spec.mlflow_tracking_uri is not None:
            from mlflow.tracking import MlflowClient  # optional dependency, rank 0 only

            self.client = MlflowClient(spec.mlflow_tracking_uri)

    @staticmethod
    def _key(name: str) -> str:
        return name.replace("@", "_at_")  # MLflow keys allow no '@'

    def params(self, values: Mapping[str, Any]) -> None:
        """Log ``values`` as the run's parameters (texts cut to MLflow's 500 characters)."""
        if self.client is None or self.run_id is None:
            return
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        params = [Param(self._key(k), str(v)[:500]) for k, v in sorted(values.items())]
        try:
            for start in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[start : start + 100])
        except MlflowException as e:
            log.warning("could not log parameters to MLflow run %s: %s", self.run_id, e)

    def metrics(self, rows: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        """Log ``(step, {name: value})`` rows in as few requests as possible."""
        if self.client is None or self.run_id is None:
            return
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        now = int(time.time() * 1000)
        metrics = [
            Metric(self._key(name), float(value), now, step)
            for step, values in rows
            for name, value in values.items()
            if math.isfinite(value)
        ]
        try:
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])
        except MlflowException as e:
            # Losing a few points of a curve is better than losing the training run.
            log.warning("could not log %d metrics to MLflow run %s: %s", len(metrics), self.run_id, e)
