"""``custembed rank``: a next-item model's score of each candidate item, for users' own protocols.

    custembed rank --encoder sasrec --candidates candidates.tsv --out scores.tsv

``--candidates``: lines ``user<TAB>item,item,...`` (a path or URI; compressed or not).
``--out``: lines ``user<TAB>item<TAB>score``, one per candidate, in the order of the
input: the model's score for that item as the user's next ``nextitem.behaviour`` action
after everything the run date's ``current`` sequences hold of the user. Scores compare
within a user (logits, not probabilities). A candidate the model cannot score, an item
outside its vocabulary or a user without history, gets ``-Infinity``; the summary
counts them. Lines that are not ``user<TAB>items`` go to ``<out>.rejects`` with their
reason (``reason<TAB>line``); lines read = lines used + lines rejected. An existing
``--out`` is replaced only with ``--overwrite``.

Spark reads and joins; scoring runs in ``mapInPandas`` on the executors; the output is
gathered into one file at the end (written through a temporary directory, then moved).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custembed import lakefs, schemas
from custembed.config import Config
from custembed.errors import InputError
from custembed.jobs.recommend import histories, model_job_main, ranking_model

log = logging.getLogger(__name__)

NO_TAB = "no_tab"
MISSING_USER = "missing_user"
NO_ITEMS = "no_items"
SCORED_SCHEMA = "customer_id string, candidates array<string>, scores array<double>"
_LINE = "_line"


def parse_candidates(lines: DataFrame) -> DataFrame:
    """``value`` lines (plus ``_line``, their order) → ``customer_id``, ``candidates`` (array, as given),
    ``_line``, ``_reason`` (null for a usable line, else why not)."""
    value = F.col("value")
    tab = F.instr(value, "\t")
    user = F.trim(F.substring_index(value, "\t", 1))
    rest = F.expr("substr(value, instr(value, '\t') + 1)")
    items = F.filter(F.transform(F.split(rest, ","), lambda x: F.trim(x)), lambda x: x != "")
    reason = F.when(tab == 0, NO_TAB).when(user == "", MISSING_USER).when(F.size(items) == 0, NO_ITEMS).otherwise(None)
    return lines.select(
        user.alias(schemas.CUSTOMER_ID), items.alias("candidates"), value, F.col(_LINE), reason.alias("_reason")
    )


def with_candidate_ids(candidates: DataFrame, item_ids: dict[str, int]) -> DataFrame:
    """Adds ``candidate_ids`` (array<bigint>, -1 for an item outside ``item_ids``; matched trimmed and
    lower-cased, as step 1 names items)."""
    spark = candidates.sparkSession
    vocabulary = spark.createDataFrame(sorted(item_ids.items()), "_key string, _id bigint")
    exploded = candidates.select(_LINE, F.posexplode("candidates").alias("_pos", "_item"))
    matched = exploded.join(F.broadcast(vocabulary), F.lower(F.col("_item")) == F.col("_key"), "left")
    ids = matched.groupBy(_LINE).agg(
        F.transform(
            F.array_sort(F.collect_list(F.struct("_pos", F.coalesce(F.col("_id"), F.lit(-1)).alias("_id")))),
            lambda p: p["_id"],
        ).alias("candidate_ids")
    )
    return candidates.join(ids, _LINE)


def write_single_file(rows: DataFrame, out: str) -> None:
    """``rows`` as one headerless tab-separated file at ``out`` (through a temporary directory beside it)."""
    scratch = f"{out}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        rows.coalesce(1).write.option("sep", "\t").option("header", False).csv(lakefs.spark_uri(scratch))
        parts = lakefs.glob(scratch, "part-*")
        if len(parts) != 1:
            raise RuntimeError(f"expected one part file under {scratch}, found {len(parts)}")
        lakefs.move(parts[0], out)
    finally:
        lakefs.rm(scratch, recursive=True)


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    run_date: dt.date,
    candidates_path: str,
    out: str,
    encoder: str,
    ref: str | None = None,
    model_path: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score every usable candidate line into ``out``; rejected lines into ``<out>.rejects``."""
    from custembed.jobs.common import lake_from, record_run
    from custembed.udfs.rank import rank_partitions

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    out = lakefs.qualify(out)
    rejects_out = f"{out}.rejects"
    if not overwrite and lakefs.exists(out):
        raise InputError(f"{out} exists: pass --overwrite to replace it")
    lake = lake_from(spark, cfg)
    day = run_date.isoformat()
    settings = cfg.nextitem
    users = histories(lake, day, partitions=settings.partitions)
    model = ranking_model(cfg, lake, users, encoder=encoder, ref=ref, model_path=model_path)
    lines = lake.read_text(candidates_path, what="candidates file").withColumn(_LINE, F.monotonically_increasing_id())
    parsed = parse_candidates(lines).persist()
    try:
        usable = with_candidate_ids(parsed.where(F.col("_reason").isNull()), model.item_ids(settings.behaviour))
        requests = usable.join(users, schemas.CUSTOMER_ID, "left").repartition(settings.partitions)
        fn = rank_partitions(model.model_dir, batch_size=settings.batch_size, threads=cfg.embed.threads_per_worker or 1)
        scored = requests.select(schemas.CUSTOMER_ID, _LINE, "tokens", schemas.GAPS, "candidates", "candidate_ids")
        result = scored.mapInPandas(fn, f"{SCORED_SCHEMA}, {_LINE} bigint").select(
            schemas.CUSTOMER_ID,
            _LINE,
            F.posexplode(F.arrays_zip(F.col("candidates").alias("item"), F.col("scores").alias("score"))).alias(
                "_pos", "_pair"
            ),
        )
        write_single_file(
            result.orderBy(_LINE, "_pos").select(schemas.CUSTOMER_ID, F.col("_pair.item"), F.col("_pair.score")), out
        )
        counts = parsed.groupBy("_reason").agg(F.count("*").alias("n")).collect()
        by_reason = {r["_reason"]: int(r["n"]) for r in counts if r["_reason"] is not None}
        if by_reason:
            rejected = parsed.where(F.col("_reason").isNotNull()).orderBy(_LINE).select("_reason", "value")
            write_single_file(rejected, rejects_out)
        elif lakefs.exists(rejects_out):
            lakefs.rm(rejects_out)  # a rejects file of an earlier run would be misread as this one's
        used = sum(int(r["n"]) for r in counts if r["_reason"] is None)
        written = spark.read.option("sep", "\t").csv(lakefs.spark_uri(out), schema="u string, i string, s double")
        tally = written.agg(
            F.count("*").alias("candidates"), F.sum((F.col("s") == float("-inf")).cast("int")).alias("unscored")
        ).first()
    finally:
        parsed.unpersist()
    summary = {
        "model": f"{model.name} version {model.version}",
        "lines_read": used + sum(by_reason.values()),
        "lines_used": used,
        "lines_rejected": by_reason,
        "candidates": int(tally["candidates"] or 0) if tally else 0,
        "unscored": int(tally["unscored"] or 0) if tally else 0,
        "out": out,
        "seconds": round(time.monotonic() - t0, 1),
    }
    if by_reason:
        summary["rejects"] = rejects_out
    record_run(
        lake,
        job=f"rank:{model.name}",
        run_date=run_date,
        started=started,
        status="succeeded",
        rows_read=int(summary["lines_read"]),
        rows_accepted=used,
        rows_rejected=sum(by_reason.values()),
        rejected_by_reason=by_reason,
        details=json.dumps(summary),
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--candidates", required=True, help="lines user<TAB>item,item,... (path or URI)")
    parser.add_argument("--out", required=True, help="output file: user<TAB>item<TAB>score lines")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def main(argv: Sequence[str] | None = None) -> int:
    def options(args: argparse.Namespace) -> dict[str, Any]:
        return {"candidates_path": args.candidates, "out": args.out, "overwrite": args.overwrite}

    return model_job_main("rank", argv, run, add_arguments, options)
