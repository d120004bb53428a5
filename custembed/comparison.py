"""The model comparison: metrics of one classifier per product and embedding source, in pandas.

One computation behind every view of it: the scoring job's text table, the
notebooks' ``explore.model_comparison`` and the HTML report. Input is rows of
``model_metrics`` (any columns besides ``product``, ``source``,
``classifier`` and the values compared); no pyspark here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from custembed.errors import InputError
from custembed.tables import CLASSIFIER, PRODUCT, SOURCE

log = logging.getLogger(__name__)

# Metrics compared, in display order (higher is better for all three).
COMPARISON_METRICS: tuple[str, ...] = ("auc", "f1", "top10_lift")
KEYS = (PRODUCT, SOURCE)


def _first_seen(values: pd.Series) -> list[str]:
    return [str(value) for value in pd.unique(values.astype(str))]


def model_comparison(
    metrics: pd.DataFrame,
    *,
    classifier: str,
    values: Sequence[str] = COMPARISON_METRICS,
    sort: bool = True,
    duplicates: str = "error",
    where: str = "model_metrics",
) -> pd.DataFrame:
    """One classifier's ``values`` per product (rows) and source (columns).

    Args:
        metrics: ``model_metrics`` rows, several classifiers allowed.
        classifier: the classifier compared.
        values: metric columns to show, in order.
        sort: products and sources sorted (``True``) or in order of first appearance.
        duplicates: ``"error"`` refuses several rows for one (product, source); ``"last"`` keeps the last.
        where: what ``metrics`` is, for messages.

    Returns:
        One row per product; columns a two-level index ``(metric, source)``,
        metrics in the order of ``values``; floats, NaN where a product has no
        value for a source (e.g. AUC when the test window has no buyers).

    Raises:
        InputError: the classifier has no rows (the available ones are listed), or
            duplicated (product, source) rows with ``duplicates="error"``.
    """
    if duplicates not in ("error", "last"):
        raise ValueError(f"duplicates must be 'error' or 'last', got {duplicates!r}")
    available = sorted(str(name) for name in metrics[CLASSIFIER].dropna().unique()) if len(metrics) else []
    if classifier not in available:
        raise InputError(f"unknown classifier {classifier!r} in {where}; available: {', '.join(available) or 'none'}")
    chosen = metrics[metrics[CLASSIFIER].astype(str) == classifier]
    chosen = chosen.assign(**{PRODUCT: chosen[PRODUCT].astype(str), SOURCE: chosen[SOURCE].astype(str)})
    repeated = chosen.duplicated(list(KEYS), keep="last")
    if repeated.any() and duplicates == "error":
        pairs = chosen.loc[repeated, list(KEYS)].drop_duplicates().values.tolist()
        raise InputError(f"{where} has several {classifier} rows for (product, source) {pairs}")
    if repeated.any():
        log.warning(
            "%d duplicate %s rows of %s for (product, source); keeping the last of each",
            int(repeated.sum()),
            where,
            classifier,
        )
        chosen = chosen[~repeated]
    products = sorted(chosen[PRODUCT].unique()) if sort else _first_seen(chosen[PRODUCT])
    sources = sorted(chosen[SOURCE].unique()) if sort else _first_seen(chosen[SOURCE])
    table = chosen.pivot(index=PRODUCT, columns=SOURCE, values=list(values))
    table = table.apply(pd.to_numeric, errors="coerce").astype(float)
    table = table.reindex(index=products, columns=pd.MultiIndex.from_product([list(values), sources]))
    table.columns.names = ["metric", SOURCE]
    table.index.name = PRODUCT
    return table


def best_sources(comparison: pd.DataFrame) -> pd.DataFrame:
    """Which source wins each metric per product, from :func:`model_comparison`'s table.

    Returns:
        Rows as ``comparison`` (products), one column per metric holding the
        source with the highest value; ``None`` where no source has a value.
        A tie goes to the source that comes first.
    """
    winners: dict[str, list[str | None]] = {}
    for metric in comparison.columns.get_level_values(0).unique():
        values = comparison[metric]
        winners[str(metric)] = [None if row.isna().all() else str(row.idxmax()) for _, row in values.iterrows()]
    return pd.DataFrame(winners, index=comparison.index)


# What :func:`comparison_lines` shows: point values, the AUC's interval and its paired difference to the best source.
COMPARISON_LINE_VALUES: tuple[str, ...] = (
    "auc",
    "auc_lo",
    "auc_hi",
    "f1",
    "top10_lift",
    "positives",
    "auc_diff",
    "auc_diff_lo",
    "auc_diff_hi",
)
PROTOCOL_NAMES = {
    "customer_disjoint": "held-out customers (customer-disjoint folds), test window",
    "same_customers": "the training customers, next (test) window: the paper's protocol",
}


def protocol_name(protocol: str) -> str:
    """How a ``model_metrics.protocol`` value reads in a heading."""
    return PROTOCOL_NAMES.get(protocol, protocol)


def _versus_best(row: pd.Series) -> str:
    """``best``, or the AUC difference to the best source with its paired interval; ``*`` when it excludes 0."""
    if pd.isna(row.get("auc")):
        return ""
    if pd.isna(row.get("auc_diff")):
        return "best"
    lo, hi = row.get("auc_diff_lo"), row.get("auc_diff_hi")
    if pd.isna(lo) or pd.isna(hi):
        return f"{row['auc_diff']:+.3f}"
    mark = " *" if hi < 0 or lo > 0 else ""
    return f"{row['auc_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]{mark}"


def _interval(row: pd.Series, metric: str) -> str:
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    return "" if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) else f"[{lo:.3f}, {hi:.3f}]"


def comparison_lines(comparison: pd.DataFrame, *, classifier: str, day: str, protocol: str | None = None) -> list[str]:
    """The comparison as text lines: per product and source AUC (95 % interval), F1, top-10 % lift, buyers
    and the AUC difference to the product's best source (paired bootstrap interval, ``*`` significant);
    then means.

    ``comparison`` is :func:`model_comparison` with ``values`` :data:`COMPARISON_LINE_VALUES` (or at least
    ``auc, f1, top10_lift, positives``). The mean AUC per source is over the products with an AUC, its
    mean lift over the same products. ``protocol`` (``model_metrics.protocol``) is named in the heading.
    """

    def fmt(value: float, width: int) -> str:
        return f"{'-':>{width}}" if pd.isna(value) else f"{value:>{width}.3f}"

    heading = f"\nmodel comparison ({classifier}, test window, run date {day})"
    if protocol:
        heading = f"\nmodel comparison ({classifier}, run date {day}; evaluated on {protocol_name(protocol)})"
    sources = list(comparison["auc"].columns)
    width = max(10, *(len(str(s)) for s in sources)) if sources else 10
    lines = [
        heading,
        f"{'product':<18} {'source':<{width}} {'AUC':>6} {'95 % interval':<15} {'F1':>6} {'lift@10%':>9} "
        f"{'buyers':>7}  AUC vs best source (95 %, * = significant)",
    ]
    for product in comparison.index:
        for source in sources:
            row = comparison.loc[product, (slice(None), source)].droplevel(SOURCE)
            if row.isna().all():
                continue
            buyers = "-" if pd.isna(row["positives"]) else str(int(row["positives"]))
            lines.append(
                f"{product:<18} {source:<{width}} {fmt(row['auc'], 6)} {_interval(row, 'auc'):<15} {fmt(row['f1'], 6)} "
                f"{fmt(row['top10_lift'], 9)} {buyers:>7}  {_versus_best(row)}".rstrip()
            )
    for source in sources:
        auc = comparison[("auc", source)]
        if auc.notna().any():
            lift = comparison[("top10_lift", source)][auc.notna()].dropna()
            lift_mean = float(lift.mean()) if len(lift) else 0.0
            lines.append(f"{'mean':<18} {source:<{width}} {auc.mean():>6.3f} {'':<15} {'':>6} {lift_mean:>9.3f}")
    return lines


def probe_table(
    metrics: pd.DataFrame, *, values: Sequence[str] = ("auc", "top10_lift"), first: str | None = None
) -> pd.DataFrame:
    """Mean ``values`` per source (rows) and classifier (columns ``(metric, classifier)``), over products.

    Only classifiers fitted on every (source, product) of ``metrics`` count (the default one and
    ``score.probes``; the one-product classifier comparison does not), and a source's means are over
    the products where every such classifier has an AUC, so the columns compare like with like.
    Empty when fewer than two classifiers qualify. Classifier ``first`` (the default one) leads.
    """
    if not len(metrics):
        return pd.DataFrame()
    rows = metrics.assign(**{c: metrics[c].astype(str) for c in (SOURCE, PRODUCT, CLASSIFIER)})
    pairs = set(map(tuple, rows[[SOURCE, PRODUCT]].drop_duplicates().values.tolist()))
    covering = [
        c
        for c in _first_seen(rows[CLASSIFIER])
        if set(map(tuple, rows.loc[rows[CLASSIFIER] == c, [SOURCE, PRODUCT]].values.tolist())) == pairs
    ]
    if len(covering) < 2:
        return pd.DataFrame()
    covering.sort(key=lambda c: c != first)
    chosen = rows[rows[CLASSIFIER].isin(covering)].drop_duplicates([SOURCE, PRODUCT, CLASSIFIER], keep="last")
    auc = pd.to_numeric(chosen["auc"], errors="coerce")
    complete = chosen.assign(auc=auc).groupby([SOURCE, PRODUCT])["auc"].transform(lambda a: a.notna().all())
    kept = chosen[complete.astype(bool)]
    table = kept.assign(**{v: pd.to_numeric(kept[v], errors="coerce") for v in values}).pivot_table(
        index=SOURCE, columns=CLASSIFIER, values=list(values), aggfunc="mean"
    )
    table = table.reindex(columns=pd.MultiIndex.from_product([list(values), covering]))
    table.columns.names = ["metric", CLASSIFIER]
    return table


def probe_lines(table: pd.DataFrame) -> list[str]:
    """:func:`probe_table` as text: mean AUC (and lift) per source under each classifier."""
    if table.empty:
        return []
    classifiers = list(table["auc"].columns)
    width = max(10, *(len(str(s)) for s in table.index))
    lines = [
        "\nrepresentation probes: mean AUC / top-10 % lift over products, per classifier "
        "(a linear probe or k-NN close to the forest: the representation carries the signal)",
        f"{'source':<{width}} " + " ".join(f"{c[:19]:>19}" for c in classifiers),
    ]
    for source in table.index:
        cells = []
        for c in classifiers:
            auc, lift = table.loc[source, ("auc", c)], table.loc[source, ("top10_lift", c)]
            cells.append(f"{'-' if pd.isna(auc) else f'{auc:.3f}':>11} / {'-' if pd.isna(lift) else f'{lift:.2f}':>5}")
        lines.append(f"{source:<{width}} " + " ".join(cells))
    return lines
