"""Per-product classifiers: a numpy/scikit-learn core and the grouped-pandas functions Spark runs.

Training runs one group per (source, product, classifier) with ``applyInPandas``:
each group's (balanced) training set goes to one Python worker, never to the
driver, and the worker writes the fitted model to the model store under the lake
(one file per source × product × classifier) and returns one small manifest row.
Scoring gets rows grouped by model, loads each model from the store once per run
of its rows and scores Arrow batches: no model passes through the driver, and a
worker holds one model at a time.
"""

from __future__ import annotations

import functools
import json
import pickle
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from custembed.tables import CLASSIFIER, CUSTOMER_ID, LABEL, VECTOR

CLASSIFIERS = ("random_forest", "xgboost", "lightgbm", "logistic_regression", "mlp", "knn")
# Estimators without class or sample weights: class_weight repeats each buyer instead (the same balance).
BALANCED_BY_REPEATS = ("mlp", "knn")
KNN_NEIGHBOURS = 25
# Characters kept in model-store path segments (the same on HDFS, S3 and local disk); others become "_".
_PATH_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=-]")


def make_classifier(
    name: str, *, seed: int, class_weight: bool = False, threads: int = 1, positive_weight: float = 1.0
) -> Any:
    """A fresh scikit-learn-compatible binary classifier by name.

    ``class_weight`` balances the classes where the estimator takes it as a parameter
    (``class_weight="balanced"``; XGBoost's and LightGBM's ``scale_pos_weight=positive_weight``,
    the non-buyers/buyers ratio); the MLP and k-NN get it as repeated buyers in :func:`fit`.
    """
    weight = "balanced" if class_weight else None
    if name == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=200,
            min_samples_leaf=3,
            max_depth=12,
            max_features="sqrt",
            class_weight=weight,
            random_state=seed,
            n_jobs=threads,
        )
    if name == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(
            n_estimators=200,
            max_depth=4,
            learning_rate=0.05,
            subsample=0.8,
            colsample_bytree=0.8,
            scale_pos_weight=positive_weight if class_weight else 1.0,
            random_state=seed,
            n_jobs=threads,
            verbosity=0,
        )
    if name == "lightgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            n_estimators=200,
            num_leaves=15,
            learning_rate=0.05,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            scale_pos_weight=positive_weight if class_weight else 1.0,
            random_state=seed,
            n_jobs=threads,
            verbose=-1,
        )
    if name == "logistic_regression":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5, class_weight=weight))
    if name == "mlp":
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=500, early_stopping=True, random_state=seed),
        )
    if name == "knn":
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # A probe of the representation's geometry: buyers' share among the nearest customers.
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=KNN_NEIGHBOURS, n_jobs=threads))
    raise ValueError(f"unknown classifier {name!r} (known: {', '.join(CLASSIFIERS)}, spark_random_forest)")


def stack(vectors: pd.Series) -> np.ndarray:
    """A column of equal-length arrays → ``[n, H]`` float32."""
    if len(vectors) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in vectors])


def _fitted(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    classifier: str,
    seed: int,
    class_weight: bool,
    params: Mapping[str, Any] | None = None,
) -> Any:
    """A fitted classifier (both classes present), with ``params`` (``set_params`` names) over the defaults."""
    positives = int((labels == 1).sum())
    model = make_classifier(
        classifier, seed=seed, class_weight=class_weight, positive_weight=(len(labels) - positives) / positives
    )
    if classifier == "knn":
        model.set_params(kneighborsclassifier__n_neighbors=min(KNN_NEIGHBOURS, len(labels)))
    if params:
        model.set_params(**params)
    if class_weight and classifier in BALANCED_BY_REPEATS:
        # MLPClassifier and KNeighborsClassifier take no class weights (and the MLP's early stopping
        # ignores sample weights): buyers are repeated, round(non-buyers / buyers) times each.
        repeats = np.where(labels == 1, max(1, round((len(labels) - positives) / positives)), 1)
        model.fit(np.repeat(features, repeats, axis=0), np.repeat(labels, repeats))
    else:
        model.fit(features, labels)
    return model


def fit(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    classifier: str,
    seed: int,
    class_weight: bool = False,
    params: Mapping[str, Any] | None = None,
) -> tuple[bytes, str]:
    """Fit one classifier; (pickled model, message). One class only → no model and a message saying so."""
    classes = np.unique(labels)
    if len(classes) < 2:
        what = "no buyers" if classes.size == 0 or classes[0] == 0 else "only buyers"
        return b"", f"not trained: {what} in the training window"
    model = _fitted(features, labels, classifier=classifier, seed=seed, class_weight=class_weight, params=params)
    return pickle.dumps(model), "ok"


# ---------------------------------------------------------------- tuning (score.tuning)


def search_space(classifier: str, trial: Any, *, rows: int) -> dict[str, Any]:
    """The main settings of ``classifier`` drawn by an Optuna ``trial`` (``set_params`` names)."""
    if classifier == "random_forest":
        return {
            "max_depth": trial.suggest_int("max_depth", 3, 16),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 32, log=True),
            "max_features": trial.suggest_categorical("max_features", ["sqrt", "log2", 0.3, 0.6]),
        }
    if classifier in ("xgboost", "lightgbm"):
        depth = (
            {"max_depth": trial.suggest_int("max_depth", 2, 8)}
            if classifier == "xgboost"
            else {"num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True)}
        )
        return {
            **depth,
            "n_estimators": trial.suggest_int("n_estimators", 50, 400, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        }
    if classifier == "logistic_regression":
        return {"logisticregression__C": trial.suggest_float("C", 1e-3, 10.0, log=True)}
    if classifier == "mlp":
        return {
            "mlpclassifier__alpha": trial.suggest_float("alpha", 1e-5, 1e-1, log=True),
            "mlpclassifier__hidden_layer_sizes": (trial.suggest_categorical("hidden", [16, 32, 64, 128]),),
        }
    if classifier == "knn":
        return {
            "kneighborsclassifier__n_neighbors": trial.suggest_int("n_neighbors", 3, max(3, min(200, rows)), log=True),
            "kneighborsclassifier__weights": trial.suggest_categorical("weights", ["uniform", "distance"]),
        }
    raise ValueError(f"no search space for classifier {classifier!r}")


def tune(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    classifier: str,
    seed: int,
    class_weight: bool = False,
    trials: int,
    validation_share: float = 0.25,
) -> tuple[dict[str, Any], float]:
    """A seeded Optuna search (TPE) of ``classifier``'s main settings: (best params, its validation AUC).

    The validation fold is carved from the training rows given (customers of the train fold:
    one row each), stratified and seeded; the test customers are never seen. The caller refits
    the best params on all the rows.
    """
    import optuna
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fit_x, val_x, fit_y, val_y = train_test_split(
        features, labels, test_size=validation_share, stratify=labels, random_state=seed
    )

    def objective(trial: Any) -> float:
        params = search_space(classifier, trial, rows=len(fit_y))
        model = _fitted(fit_x, fit_y, classifier=classifier, seed=seed, class_weight=class_weight, params=params)
        return float(roc_auc_score(val_y, model.predict_proba(val_x)[:, 1]))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    best = search_space(classifier, optuna.trial.FixedTrial(study.best_params), rows=len(fit_y))
    return best, float(study.best_value)


def model_uri(store: str, day: str, source: str, product: str, classifier: str, *, suffix: str = ".pkl") -> str:
    """Where the model of one (source, product, classifier) of run date ``day`` lives in the model store.

    ``suffix`` ends the last segment: ``.pkl`` for a pickled model, empty for a directory (MLlib's format).
    """
    parts = [_PATH_UNSAFE.sub("_", str(p)) for p in (day, source, product, classifier)]
    return "/".join([store.rstrip("/"), *parts[:-1], f"{parts[-1]}{suffix}"])


def write_model(uri: str, blob: bytes) -> None:
    """Write one pickled model to ``uri`` (a lake URI or local path), replacing it whole."""
    from custembed import lakefs

    staging = lakefs.join(lakefs.parent(uri), f".tmp-{uuid.uuid4().hex}")
    with lakefs.open_output(staging) as stream:
        stream.write(blob)
    lakefs.move(staging, uri)


@functools.lru_cache(maxsize=1)
def load_model(uri: str) -> Any:
    """The model at ``uri``, kept until another is asked for: a worker holds one model at a time."""
    from custembed import lakefs

    with lakefs.open_input(uri) as stream:
        return pickle.loads(stream.read())  # models this job wrote to its own lake


MIN_CLASS_ROWS_TO_TUNE = 8  # fewer buyers (or non-buyers) than this: the defaults, no search


def tuned_params(
    features: np.ndarray, labels: np.ndarray, *, classifier: str, seed: int, class_weight: bool, trials: int
) -> tuple[dict[str, Any] | None, float | None, str]:
    """(params, validation AUC, note) of a search of ``trials`` trials; no search when off or too few rows."""
    if trials < 1:
        return None, None, ""
    smallest = int(min((labels == 1).sum(), (labels == 0).sum()))
    if smallest < MIN_CLASS_ROWS_TO_TUNE:
        return None, None, f" (defaults: {smallest} rows of a class, too few to tune)"
    params, auc = tune(features, labels, classifier=classifier, seed=seed, class_weight=class_weight, trials=trials)
    return params, auc, ""


def fit_groups(
    *, seed: int, class_weight: bool, keys: tuple[str, ...], store: str, day: str, trials: int = 0
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """An ``applyInPandas`` function: one group's (keys..., classifier, vector, label) → its model written to
    the store (:func:`model_uri`) and one manifest row (keys..., classifier, path, bytes, train_rows,
    train_seconds, message, params, validation_auc); ``path`` is empty when no model could be trained.

    With ``trials`` the classifier's settings are searched first (:func:`tune`, on a validation fold
    of the group's own rows) and the best refitted on all of them; groups run on the executors in
    parallel, each search in its worker.
    """

    def run(group: pd.DataFrame) -> pd.DataFrame:
        t0 = time.perf_counter()
        if CUSTOMER_ID in group.columns:  # rows arrive in shuffle order: fit on a fixed order, same model
            group = group.sort_values(CUSTOMER_ID, kind="stable", ignore_index=True)
        classifier = str(group[CLASSIFIER].iloc[0])
        features = stack(group[VECTOR])
        labels = group[LABEL].to_numpy(dtype=np.int64)
        params, validation_auc, note = None, None, ""
        if len(np.unique(labels)) == 2:
            params, validation_auc, note = tuned_params(
                features, labels, classifier=classifier, seed=seed, class_weight=class_weight, trials=trials
            )
        model, message = fit(
            features, labels, classifier=classifier, seed=seed, class_weight=class_weight, params=params
        )
        path = ""
        if model:
            source, product = (str(group[k].iloc[0]) for k in keys)  # keys: (source, product)
            path = model_uri(store, day, source, product, classifier)
            write_model(path, model)
        seconds = time.perf_counter() - t0
        named = "/".join(str(group[k].iloc[0]) for k in keys)
        tuned = f", tuned ({trials} trials) validation AUC {validation_auc:.3f}" if validation_auc is not None else ""
        # the worker's stderr: the driver's console in local mode, the executor's log on a cluster
        print(f"fitted {named}/{classifier}: {len(group)} rows, {seconds:.1f} s{tuned}", file=sys.stderr, flush=True)
        row: dict[str, Any] = {k: [group[k].iloc[0]] for k in keys}
        row.update(
            {
                CLASSIFIER: [classifier],
                "path": [path],
                "bytes": [len(model)],
                "train_rows": [len(group)],
                "train_seconds": [seconds],
                "message": [message + note],
                "params": [json.dumps(params, default=str, sort_keys=True) if params else None],
                "validation_auc": [validation_auc],
            }
        )
        return pd.DataFrame(row)

    return run


def predict(model: Any, features: np.ndarray) -> np.ndarray:
    """P(buy) per row; NaN everywhere when ``model`` is None (none could be trained)."""
    if model is None or len(features) == 0:
        return np.full(len(features), np.nan)
    return np.asarray(model.predict_proba(features)[:, 1], dtype=np.float64)


def score_partitions(
    models: Any, key_columns: tuple[str, ...]
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function scoring (key columns..., vector, ...) rows with the model of their key.

    ``models`` maps a key tuple to its model's path in the store (or is a Spark broadcast of such a
    mapping). Rows should arrive grouped by key (the job repartitions and sorts them): each model is
    then loaded once per run of its rows, and a worker holds one model at a time.
    """

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        table: Mapping[tuple[Any, ...], str] = models.value if hasattr(models, "value") else models
        for frame in frames:
            scores = np.full(len(frame), np.nan)
            keys = pd.Series(list(zip(*(frame[c] for c in key_columns), strict=True)), index=frame.index)
            for key in pd.unique(keys):
                rows = np.flatnonzero((keys == key).to_numpy())
                path = table.get(key, "")
                scores[rows] = predict(load_model(path) if path else None, stack(frame[VECTOR].iloc[rows]))
            out = frame.drop(columns=[VECTOR])
            out["score"] = scores
            yield out

    return run
