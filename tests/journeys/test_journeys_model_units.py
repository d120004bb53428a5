"""Model-side units: JS against SciPy, Markov counts on a hand-made corpus, prompts, holdout split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from custembed.journeys.markov import END, START, MarkovChain
from custembed.journeys.metrics import js_divergence


@pytest.mark.parametrize(
    ("p", "q"),
    [
        ({"a": 3, "b": 1}, {"a": 1, "b": 3}),
        ({"a": 5, "b": 5, "c": 0}, {"a": 1, "b": 2, "c": 7}),
        ({"a": 1}, {"b": 4}),  # disjoint: 1 bit
        ({"x": 2, "y": 2}, {"x": 4, "y": 4}),  # equal after normalising: 0
        ({"a": 1, "b": 2}, {"b": 2, "c": 5, "d": 1}),  # categories on one side only
    ],
)
def test_js_is_scipys_distance_squared_base_2(p: dict[str, int], q: dict[str, int]) -> None:
    keys = sorted(set(p) | set(q))
    expected = jensenshannon([p.get(k, 0) for k in keys], [q.get(k, 0) for k in keys], base=2) ** 2
    assert js_divergence(p, q) == pytest.approx(expected, abs=1e-12)


def test_js_of_an_empty_histogram_is_nan() -> None:
    assert np.isnan(js_divergence({}, {"a": 1}))


def test_bias_corrected_js_and_basic_interval() -> None:
    from custembed.jobs.journeys_evaluate import bias_corrected

    # replicates above the plug-in (the finite-sample bias): the estimate moves down by it,
    # the interval is reflected around the plug-in and brackets the estimate
    value, low, high = bias_corrected(0.042, 0.055, 0.070, 0.0625)
    assert value == pytest.approx(0.0215)
    assert (low, high) == (pytest.approx(0.014), pytest.approx(0.029))
    assert low <= value <= high
    assert bias_corrected(0.001, 0.002, 0.008, 0.005) == (0.0, 0.0, 0.0)  # clipped at 0: no detectable difference


def test_markov_chain_samples_what_it_counted_and_backs_off() -> None:
    counts = [
        (2, f"{START} {START}", "A", 2),
        (2, f"{START} A", "B", 2),
        (2, "A B", END, 1),
        (2, "A B", "C", 1),
        (2, "B C", END, 1),
        (1, "A", "B", 2),
        (1, "B", "C", 1),
        (1, "B", END, 1),
        (0, "", "A", 2),
        (0, "", "B", 2),
    ]
    chain = MarkovChain.from_counts(2, counts)
    nexts, probs = chain.distribution(["A", "B"])
    assert dict(zip(nexts, probs, strict=True)) == {END: 0.5, "C": 0.5}
    # an unseen pair backs off to the last token alone
    nexts, probs = chain.distribution(["C", "A"])
    assert dict(zip(nexts, probs, strict=True)) == {"B": 1.0}
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert chain.generate([], max_new_tokens=10, rng=rng)[:2] == ["A", "B"]


def test_markov_file_round_trip(tmp_path: Any) -> None:
    chain = MarkovChain.from_counts(1, [(1, "A", "B", 3), (1, "A", END, 1), (0, "", "A", 4)])
    chain.save(tmp_path)
    assert MarkovChain.load(tmp_path) == chain


@pytest.mark.slow
def test_spark_frames_markov_counts_prompts_and_split(spark: Any) -> None:
    from custembed.jobs import journeys_frames as frames

    journeys = spark.createDataFrame(
        [("s", "1", "A B $dairy C"), ("s", "2", "A B"), ("s", "3", "A C C D E F G H I")],
        "store string, visit_id string, text string",
    )
    counts = {
        (r["order"], r["state"], r["next"]): r["count"] for r in frames.markov_counts(journeys, order=2).collect()
    }
    # hand count: (order 2) <s> <s> -> A three times; A B -> $dairy once, </s> once
    assert counts[(2, f"{START} {START}", "A")] == 3
    assert counts[(2, "A B", "$dairy")] == 1 and counts[(2, "A B", END)] == 1
    assert counts[(1, "C", "C")] == 1 and counts[(1, "C", "D")] == 1 and counts[(1, "C", END)] == 1
    assert counts[(0, "", "A")] == 3 and counts[(0, "", END)] == 3
    assert sum(c for (k, _, _), c in counts.items() if k == 0) == 4 + 2 + 9 + 3  # tokens + one end each

    prompts = {r["visit_id"]: r["prompt"] for r in frames.prompts(journeys, points=3).collect()}
    assert prompts == {"1": "A B $dairy C", "2": "A B", "3": "A C C"}

    many = spark.range(2000).selectExpr("'s' as store", "cast(id as string) as visit_id", "'A' as text")
    test = frames.split_holdout(many, test_pct=20, salt="test", test=True)
    train = frames.split_holdout(many, test_pct=20, salt="test", test=False)
    assert test.count() + train.count() == 2000 and 300 < test.count() < 500
    assert test.join(train, "visit_id").count() == 0
    tenth = frames.sample_visits(train, fraction=0.1, seed=0)
    hundredth = frames.sample_visits(train, fraction=0.01, seed=0)
    assert hundredth.join(tenth, "visit_id", "left_anti").count() == 0  # nested shares
    assert 100 < tenth.count() < 220


@pytest.mark.slow
def test_spark_replicate_js_equals_numpy_and_bootstrap_weights_are_poisson(spark: Any) -> None:
    from custembed.jobs import journeys_frames as frames

    gen = {"a": 3.0, "b": 1.0, "c": 2.0}
    real = {"a": 1.0, "b": 3.0, "d": 4.0}
    generated = spark.createDataFrame(
        [("s", "m", 0, k, v) for k, v in gen.items()] + [("s", "m", 1, "a", 1.0)],
        "store string, model string, replicate int, category string, weight double",
    )
    reference = spark.createDataFrame(
        [("s", 0, k, v) for k, v in real.items()] + [("s", 1, "a", 2.0)],
        "store string, replicate int, category string, weight double",
    )
    js = {
        r["replicate"]: r["js"]
        for r in frames.replicate_js(generated, reference, gen_keys=("store", "model")).collect()
    }
    assert js[0] == pytest.approx(js_divergence(gen, real), abs=1e-9)
    assert js[1] == pytest.approx(0.0, abs=1e-12)  # the same single category on both sides

    uniforms = spark.range(20_000).selectExpr("rand(3) as u")
    weights = [r[0] for r in uniforms.select(frames.poisson_weight(uniforms["u"])).collect()]
    assert np.mean(weights) == pytest.approx(1.0, abs=0.03) and np.var(weights) == pytest.approx(1.0, abs=0.06)
