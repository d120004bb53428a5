"""The distributed classifier path (MLlib random forest) on tiny frames."""

from __future__ import annotations

import numpy as np
from pyspark.sql import functions as F

from custembed.jobs.score import SPARK_RF, spark_forest


def test_spark_forest_fits_once_and_scores_every_target(spark) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    labels = (rng.random(120) < 0.5).astype(int)
    vectors = rng.normal(size=(120, 4)) + labels[:, None] * 2.0
    rows = [("s", "p", f"c{i}", [float(x) for x in v], int(y)) for i, (v, y) in enumerate(zip(vectors, labels,
                                                                                            strict=True))]
    train = spark.createDataFrame(rows, "source string, product string, customer_id string, vector array<double>, "
                                        "label int")
    target = train.drop("label").withColumn("classifier", F.lit(SPARK_RF))
    info, (first, second) = spark_forest(train, [target, target.limit(10)], seed=1)
    assert [r["classifier"] for r in info.collect()] == [SPARK_RF]
    scores = {r["customer_id"]: r["score"] for r in first.collect()}
    assert len(scores) == 120 and second.count() == 10
    buyers = np.mean([scores[f"c{i}"] for i in range(120) if labels[i]])
    others = np.mean([scores[f"c{i}"] for i in range(120) if not labels[i]])
    assert buyers > others + 0.3
