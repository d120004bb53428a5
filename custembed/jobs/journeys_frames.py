"""Spark transforms of the journey model side: DataFrames in, DataFrame out, built-ins only.

Journey text is space-separated tokens: location codes and ``$<zone>`` purchase markers
(:mod:`custembed.journeys.text` writes and parses it). A *visit key* is ``store:visit_id``:
training's validation hash, the held-out test hash and the transfer fractions all hash it.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from custembed.journeys.markov import END, SEPARATOR, START

STORE = "store"
VISIT_ID = "visit_id"
TEXT = "text"
MODEL = "model"
PURCHASE_PREFIX = "$"  # as custembed.journeys.text.PURCHASE_PREFIX; kept here so this module stands alone


def visit_key() -> Column:
    return F.concat_ws(":", F.col(STORE), F.col(VISIT_ID).cast("string"))


def bucket(salt: str, modulus: int = 100) -> Column:
    """A stable bucket in ``[0, modulus)`` of each visit: ``crc32('<salt>:<store>:<visit_id>') % modulus``."""
    return F.crc32(F.concat(F.lit(f"{salt}:"), visit_key())) % F.lit(modulus)


def split_holdout(journeys: DataFrame, *, test_pct: int, salt: str, test: bool) -> DataFrame:
    """The held-out test visits (``test=True``) or the others, by a salted hash of the visit key."""
    held_out = bucket(salt) < F.lit(test_pct)
    return journeys.where(held_out if test else ~held_out)


def sample_visits(journeys: DataFrame, *, fraction: float, seed: int) -> DataFrame:
    """A seeded share of visits; smaller fractions are subsets of larger ones (same hash, lower threshold)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if fraction == 1:
        return journeys
    return journeys.where(bucket(f"fraction:{seed}", 1_000_000) < F.lit(int(round(fraction * 1_000_000))))


def tokens(text: Column) -> Column:
    """The tokens of journey text (empty strings dropped)."""
    return F.filter(F.split(F.trim(text), r"\s+"), lambda t: F.length(t) > 0)


def markov_counts(journeys: DataFrame, *, order: int) -> DataFrame:
    """``(order, state, next, count)`` for every order 0..``order`` over the ``text`` of ``journeys``.

    ``state`` is the previous ``k`` tokens joined by a space (journeys padded with ``<s>``
    at the start; ``</s>`` closes each), ``""`` for order 0.
    """
    padded = F.concat(F.array_repeat(F.lit(START), order), tokens(F.col(TEXT)), F.array(F.lit(END)))
    rows = journeys.select(padded.alias("padded"))
    per_order = []
    for k in range(order + 1):
        pairs = F.transform(F.sequence(F.lit(order), F.size("padded") - 1), _pair_of(k))
        per_order.append(
            rows.select(F.lit(k).alias("order"), F.explode(pairs).alias("pair")).select(
                "order", "pair.state", "pair.next"
            )
        )
    stacked = per_order[0]
    for other in per_order[1:]:
        stacked = stacked.unionByName(other)
    return stacked.groupBy("order", "state", "next").count()


def _pair_of(k: int):  # type: ignore[no-untyped-def]
    """(state, next) at 0-based position ``i`` of ``padded``: the ``k`` tokens before it, and it."""

    def pair(i: Column) -> Column:
        state = F.array_join(F.slice("padded", i - F.lit(k) + 1, F.lit(k)), SEPARATOR) if k else F.lit("")
        return F.struct(state.alias("state"), F.element_at("padded", i + 1).alias("next"))

    return pair


def prompts(journeys: DataFrame, *, points: int) -> DataFrame:
    """``store, visit_id, prompt``: each journey's tokens up to its ``points``-th location code.

    Purchase markers among them stay; a journey with fewer positions is its own prompt.
    """
    toks = tokens(F.col(TEXT))
    # running count of location codes; the prompt ends at the token where it reaches `points`
    is_code = F.transform(toks, lambda t: F.when(t.startswith(PURCHASE_PREFIX), 0).otherwise(1))
    running = F.transform(
        F.sequence(F.lit(1), F.size(toks)),
        lambda n: F.aggregate(F.slice(is_code, 1, n), F.lit(0), lambda acc, x: acc + x),
    )
    cut = F.array_position(running, points)  # 1-based; 0 when fewer positions
    prompt = F.when(cut > 0, F.slice(toks, 1, cut)).otherwise(toks)
    return journeys.select(STORE, VISIT_ID, F.array_join(prompt, " ").alias("prompt"))


def token_histogram(journeys: DataFrame, *, keys: tuple[str, ...], purchases: bool) -> DataFrame:
    """``(*keys, category, count)``: counts of location codes (or of purchase zones) over ``journeys``."""
    exploded = journeys.select(*keys, F.explode(tokens(F.col(TEXT))).alias("token"))
    marker = F.col("token").startswith(PURCHASE_PREFIX)
    if purchases:
        chosen = exploded.where(marker).select(*keys, F.expr("substring(token, 2)").alias("category"))
    else:
        chosen = exploded.where(~marker).select(*keys, F.col("token").alias("category"))
    return chosen.groupBy(*keys, "category").count()


def length_histogram(journeys: DataFrame, *, keys: tuple[str, ...], bin_width: int) -> DataFrame:
    """``(*keys, category, count)``: journeys per length bin (location codes, ``bin_width`` per bin)."""
    positions = F.size(F.filter(tokens(F.col(TEXT)), lambda t: ~t.startswith(PURCHASE_PREFIX)))
    binned = F.floor(positions / F.lit(bin_width)).cast("int").cast("string")
    return journeys.select(*keys, binned.alias("category")).groupBy(*keys, "category").count()


# -- bootstrap over visits ----------------------------------------------------------------------
# Poisson(1) inverse CDF: a visit's weight in one replicate (the Poisson bootstrap, which
# needs no count of the visits and runs per row; its weights average 1 like resampling's).
_POISSON_CDF = (0.36787944, 0.73575888, 0.91969860, 0.98101184, 0.99634015, 0.99940582, 0.99991676)


def poisson_weight(uniform: Column) -> Column:
    """Poisson(1) draw from a uniform in [0, 1) (weights above 7 are cut: probability < 1e-5)."""
    weight = F.lit(len(_POISSON_CDF))
    for k in reversed(range(len(_POISSON_CDF))):
        weight = F.when(uniform < F.lit(_POISSON_CDF[k]), F.lit(k)).otherwise(weight)
    return weight


def replicate_histograms(
    visits: DataFrame, *, keys: tuple[str, ...], categories: Column, replicates: int, seed: int
) -> DataFrame:
    """``(*keys, replicate, category, weight)``: Poisson-bootstrap histograms over the visits.

    ``categories`` is an array column of each visit's categories (one entry per count).
    Each visit gets weight ``Poisson(1)`` in each replicate from a seeded hash of its key,
    the same on the generated and the real side of a store (a generated journey is keyed
    to the held-out visit it continues), so paired differences stay paired.
    """
    per_visit = (
        visits.select(*keys, visit_key().alias("visit"), F.explode(categories).alias("category"))
        .groupBy(*keys, "visit", "category")
        .count()
    )
    hashed = F.xxhash64(F.lit(seed), F.col("replicate"), F.col("visit"))
    uniform = hashed.bitwiseAND(F.lit(0x7FFFFFFF).cast("bigint")) / F.lit(2.0**31)
    return (
        per_visit.select("*", F.explode(F.sequence(F.lit(0), F.lit(replicates - 1))).alias("replicate"))
        .select(*keys, "replicate", "category", (F.col("count") * poisson_weight(uniform)).alias("weight"))
        .groupBy(*keys, "replicate", "category")
        .agg(F.sum("weight").alias("weight"))
    )


def replicate_js(generated: DataFrame, real: DataFrame, *, gen_keys: tuple[str, ...]) -> DataFrame:
    """``(*gen_keys, replicate, js)``: JS divergence (bits) per replicate between generated and real histograms.

    ``generated`` is ``(*gen_keys, replicate, category, weight)`` with ``store`` among the
    keys; ``real`` is ``(store, replicate, category, weight)``.
    """
    models = generated.select(*gen_keys).distinct()
    # every category of either side, for every model: absent ones weigh 0
    real_per_model = real.join(models, STORE)
    both = generated.withColumnRenamed("weight", "g").join(
        real_per_model.withColumnRenamed("weight", "r"), [*gen_keys, "replicate", "category"], "full_outer"
    )
    both = both.fillna(0.0, subset=["g", "r"])
    group = [*gen_keys, "replicate"]
    window = Window.partitionBy(*group)
    p = F.col("g") / F.sum("g").over(window)
    q = F.col("r") / F.sum("r").over(window)
    shares = both.select(*group, p.alias("p"), q.alias("q"))
    terms = shares.select(*group, "p", "q", ((F.col("p") + F.col("q")) / 2).alias("m"))

    def half_kl(x: str) -> Column:
        return F.when(F.col(x) > 0, 0.5 * F.col(x) * F.log2(F.col(x) / F.col("m"))).otherwise(F.lit(0.0))

    return terms.groupBy(*group).agg(F.greatest(F.sum(half_kl("p") + half_kl("q")), F.lit(0.0)).alias("js"))
