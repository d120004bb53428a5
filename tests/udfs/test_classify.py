"""Classifier and baseline cores without Spark."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from custembed.udfs.baseline import count_features
from custembed.udfs.classify import CLASSIFIERS, fit, fit_groups, load_model, predict, score_partitions


def _model(blob: bytes):  # type: ignore[no-untyped-def]
    return pickle.loads(blob) if blob else None


def separable(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.5).astype(int)
    features = rng.normal(size=(n, 8)).astype(np.float32) + labels[:, None] * 1.5
    return features, labels


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_learns_a_separable_problem(name: str) -> None:
    features, labels = separable()
    blob, message = fit(features, labels, classifier=name, seed=0)
    assert message == "ok"
    scores = predict(_model(blob), features)
    assert scores.shape == (200,)
    assert scores[labels == 1].mean() > scores[labels == 0].mean() + 0.3


def test_one_class_gives_a_message_not_a_crash() -> None:
    features, _ = separable(20)
    blob, message = fit(features, np.zeros(20, int), classifier="random_forest", seed=0)
    assert blob == b"" and "no buyers" in message
    assert np.isnan(predict(_model(blob), features)).all()


def test_grouped_fit_writes_the_store_and_scoring_reads_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    features, labels = separable(120)
    group = pd.DataFrame(
        {
            "source": "s+t",
            "product": "p",
            "classifier": "logistic_regression",
            "vector": list(features),
            "label": labels,
        }
    )
    store = (tmp_path / "store").as_uri()  # a file:// URI, as a lake on any file system
    fit_rows = fit_groups(seed=0, class_weight=False, keys=("source", "product"), store=store, day="2023-07-31")
    row = fit_rows(group)
    assert row.loc[0, "message"] == "ok" and row.loc[0, "train_rows"] == 120
    path = row.loc[0, "path"]
    assert path == f"{store}/2023-07-31/s+t/p/logistic_regression.pkl" and "model" not in row.columns
    stored = tmp_path / "store" / "2023-07-31" / "s+t" / "p" / "logistic_regression.pkl"
    assert stored.stat().st_size == row.loc[0, "bytes"] > 0
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]  # no staging file left
    frame = group.drop(columns=["label"]).assign(customer_id=[f"c{i}" for i in range(120)])
    other = frame.assign(product="q")  # a task without a stored model scores NaN
    paths = {("s+t", "p", "logistic_regression"): path}
    out = next(score_partitions(paths, ("source", "product", "classifier"))(iter([pd.concat([frame, other])])))
    assert "vector" not in out.columns
    expected = predict(load_model(path), features)
    np.testing.assert_allclose(out["score"].to_numpy()[:120], expected, rtol=1e-5)
    assert np.isnan(out["score"].to_numpy()[120:]).all()
    # a rerun of the same date replaces the model in place
    fit_rows(group)
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]


def test_a_worker_holds_one_model_at_a_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from custembed.udfs.classify import write_model

    first, second = (tmp_path / "a.pkl").as_uri(), (tmp_path / "b.pkl").as_uri()
    write_model(first, pickle.dumps({"model": 1}))
    write_model(second, pickle.dumps({"model": 2}))
    load_model.cache_clear()
    assert load_model(first) == {"model": 1} and load_model(second) == {"model": 2}
    assert load_model.cache_info().currsize == 1


def test_count_features_counts_actions_and_recency() -> None:
    # ids: 3 = no action, 4.. actions; vocab 6 -> 3 actions
    vectors = count_features([[4, 4, 5, 3, 3], [3]], vocab_size=6, n_special=3, no_action_id=3)
    assert vectors.shape == (2, 6)
    np.testing.assert_allclose(vectors[0, :3], np.log1p([2, 2, 1]))
    assert vectors[0, 5] == 2  # two empty months since the last real event
    assert vectors[1, 4] == 0 and vectors[1, 5] == 1


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_class_weight_is_honoured_by_every_classifier(name: str) -> None:
    # ~5 % buyers and a weak signal: unweighted models call almost no held-out customer a buyer.
    rng = np.random.default_rng(1)
    labels = (rng.random(1200) < 0.05).astype(int)
    features = rng.normal(size=(1200, 6)).astype(np.float32) + labels[:, None] * 0.6
    train, held_out = slice(0, 600), slice(600, 1200)
    plain, _ = fit(features[train], labels[train], classifier=name, seed=0)
    weighted, message = fit(features[train], labels[train], classifier=name, seed=0, class_weight=True)
    assert message == "ok"
    called_plain = int((predict(_model(plain), features[held_out]) >= 0.5).sum())
    called_weighted = int((predict(_model(weighted), features[held_out]) >= 0.5).sum())
    assert called_weighted >= max(1.5 * called_plain, called_plain + 3), (called_plain, called_weighted)


def test_tuning_searches_on_a_validation_fold_and_is_seeded() -> None:
    from custembed.udfs.classify import tune

    features, labels = separable(160, seed=3)
    params, auc = tune(features, labels, classifier="random_forest", seed=1, trials=4)
    assert set(params) == {"max_depth", "min_samples_leaf", "max_features"} and 0.5 < auc <= 1.0
    assert tune(features, labels, classifier="random_forest", seed=1, trials=4) == (params, auc)
    blob, message = fit(features, labels, classifier="random_forest", seed=1, params=params)
    assert message == "ok" and _model(blob).get_params()["max_depth"] == params["max_depth"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_has_a_search_space(name: str) -> None:
    from custembed.udfs.classify import tune

    features, labels = separable(80, seed=4)
    params, auc = tune(features, labels, classifier=name, seed=0, trials=2)
    assert params and 0.0 <= auc <= 1.0


def test_grouped_fit_records_the_tuned_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    features, labels = separable(120)
    group = pd.DataFrame(
        {"source": "s", "product": "p", "classifier": "logistic_regression", "vector": list(features), "label": labels}
    )
    run = fit_groups(seed=0, class_weight=False, keys=("source", "product"), store=tmp_path.as_uri(), day="d", trials=3)
    row = run(group)
    assert row.loc[0, "message"] == "ok" and "logisticregression__C" in row.loc[0, "params"]
    assert 0.5 < row.loc[0, "validation_auc"] <= 1.0
    few = group.assign(label=[1] * 5 + [0] * 115)
    assert "too few to tune" in run(few).loc[0, "message"] and run(few).loc[0, "params"] is None
