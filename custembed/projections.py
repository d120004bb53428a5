"""2-D projections of customer embeddings (PCA, t-SNE, UMAP), and the one rule choosing whom to project.

Pure numpy / scikit-learn, no pyspark, no plotting: the HTML report draws
what :func:`project` returns, the notebooks call it directly.

The sample rule (:func:`sample_sizes`, :func:`sample_key`): buyers are few, so
all of them are kept and non-buyers fill the rest up to ``n``; only when
buyers would take more than half of ``n`` are both groups sampled (``n // 2``
buyers at least, or all non-buyers if fewer). Within a group the customers
with the lowest :func:`sample_key` are taken: the MD5 digest (hex) of the seeded
customer id, which Spark computes the same way (``md5(concat('<seed>:', customer_id))``),
so the pandas reader (``explore``) and the Spark job (``custembed report``)
choose the same customers from the same tables.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("PCA", "t-SNE", "UMAP")
MIN_POINTS_NONLINEAR = 10  # t-SNE / UMAP on fewer points says nothing
PCA_BEFORE_NONLINEAR = 50  # reduce wider embeddings to this many dimensions first
TSNE_ITERATIONS = 500


# ---------------------------------------------------------------- which customers


def sample_sizes(buyers: int, others: int, n: int) -> tuple[int, int]:
    """How many buyers and non-buyers a sample of at most ``n`` keeps (see the module docstring)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    keep_buyers = min(buyers, max(n // 2, n - others))
    return keep_buyers, min(others, n - keep_buyers)


def sample_prefix(seed: int) -> str:
    """The text put before a customer id in :func:`sample_key` (Spark: ``concat(lit(prefix), customer_id)``)."""
    return f"{seed}:"


def sample_key(customer_id: object, seed: int) -> str:
    """Order of a customer within its group: lower keys are sampled first; equals Spark's ``md5`` of the text.

    (Not CRC-32: it is linear, so changing the seed would barely change the order.)
    """
    return hashlib.md5(f"{sample_prefix(seed)}{customer_id}".encode(), usedforsecurity=False).hexdigest()


def choose_sample(
    customer_ids: Sequence[object], is_buyer: Sequence[bool] | np.ndarray, n: int, seed: int
) -> np.ndarray:
    """Boolean mask over ``customer_ids`` of the customers sampled (every id once; ties by id)."""
    ids = [str(customer) for customer in customer_ids]
    buyer = np.asarray(is_buyer, dtype=bool)
    keep_buyers, keep_others = sample_sizes(int(buyer.sum()), int((~buyer).sum()), n)
    chosen = np.zeros(len(ids), dtype=bool)
    for group, keep in ((buyer, keep_buyers), (~buyer, keep_others)):
        members = np.flatnonzero(group)
        order = sorted(members, key=lambda row: (sample_key(ids[row], seed), ids[row]))
        chosen[np.asarray(order[:keep], dtype=np.int64)] = True
    return chosen


# ---------------------------------------------------------------- projections


@dataclass(frozen=True)
class Projection:
    """What :func:`project` computed for one set of embeddings.

    Attributes:
        coordinates: per method (in :data:`METHODS` order), ``[count, 2]`` points or the reason
            there are none (e.g. ``"too few points (7)"``).
        titles: per method, a title (PCA's says how much variance its two axes explain).
        is_buyer: ``[count]`` flags of the projected points.
        total: usable embeddings given (finite values); ``count`` of them were projected.
        width: embedding dimensions.
        dropped: embeddings left out for NaN/inf values.
        explained_variance: PCA's explained-variance ratio of its two axes.
        reduced_first: whether t-SNE / UMAP ran on the first :data:`PCA_BEFORE_NONLINEAR` components.
        unavailable: why there is no projection at all ("" when there is one).
    """

    coordinates: dict[str, np.ndarray | str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    is_buyer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    total: int = 0
    width: int = 0
    dropped: int = 0
    explained_variance: tuple[float, float] = (float("nan"), float("nan"))
    reduced_first: bool = False
    unavailable: str = ""

    @property
    def count(self) -> int:
        return int(len(self.is_buyer))


def import_umap() -> tuple[ModuleType | None, str]:
    """The ``umap`` module, or ``None`` and why it could not be imported."""
    try:
        with warnings.catch_warnings():
            # umap / numba announce optional dependencies at import time
            warnings.simplefilter("ignore")
            import umap
    except ImportError as error:
        return None, f"umap-learn could not be imported ({error}); install the 'report' extra"
    return umap, ""


def _tsne(points: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = max(1.0, min(30.0, (len(points) - 1) / 3))
    # 500 iterations (250 of them early exaggeration) settle the picture; sklearn's 1000 cost 3-5x the time
    return TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        max_iter=TSNE_ITERATIONS,
        random_state=seed,
    ).fit_transform(points)


def _umap(points: np.ndarray, seed: int, umap_module: ModuleType) -> np.ndarray:
    reducer = umap_module.UMAP(
        n_components=2, n_neighbors=min(15, len(points) - 1), min_dist=0.1, random_state=seed, n_jobs=1
    )
    return reducer.fit_transform(points)


def _usable(
    embeddings: np.ndarray, is_buyer: np.ndarray, max_points: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Finite rows, capped at ``max_points`` by a seeded uniform subsample; (points, buyers, total, dropped)."""
    points = np.asarray(embeddings, dtype=np.float64)  # [n, H]
    buyers = np.asarray(is_buyer).astype(bool)  # [n]
    finite = np.isfinite(points).all(axis=1)
    points, buyers = points[finite], buyers[finite]
    total = len(points)
    if total > max_points:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
        points, buyers = points[chosen], buyers[chosen]
    return points, buyers, total, int((~finite).sum())


def project(
    embeddings: np.ndarray,
    is_buyer: np.ndarray,
    *,
    methods: Sequence[str] = METHODS,
    max_points: int = 2000,
    seed: int = 0,
    umap_module: ModuleType | None = None,
    name: str = "embeddings",
) -> Projection:
    """2-D projections of ``embeddings [n, H]`` by each of ``methods``, buyers flagged.

    More than ``max_points`` usable rows are subsampled uniformly with ``seed``;
    rows with NaN/inf values are left out. t-SNE and UMAP run on the first
    :data:`PCA_BEFORE_NONLINEAR` principal components of wider embeddings and
    need :data:`MIN_POINTS_NONLINEAR` points. UMAP runs when ``umap_module`` is
    given (see :func:`import_umap`). ``name`` appears in log lines.

    Returns:
        A :class:`Projection`; ``unavailable`` says why when fewer than 3 rows
        or fewer than 2 dimensions are usable.
    """
    unknown = [method for method in methods if method not in METHODS]
    if unknown or max_points < 1:
        raise ValueError(f"methods must be among {METHODS} and max_points >= 1, got {list(methods)}, {max_points}")
    from sklearn.decomposition import PCA

    points, buyers, total, dropped = _usable(embeddings, is_buyer, max_points, seed)
    if dropped:
        log.warning("%d %s with NaN/inf values left out of the projections", dropped, name)
    width = int(points.shape[1]) if points.ndim == 2 else 0
    if total < 3 or width < 2:
        return Projection(
            total=total,
            width=width,
            dropped=dropped,
            unavailable=f"{total} usable embeddings of width {width}; a projection needs at least 3 of width 2",
        )
    count = len(points)
    pca = PCA(n_components=2, random_state=seed)
    coordinates: dict[str, np.ndarray | str] = {}
    pca_points = pca.fit_transform(points)  # [n, 2]
    explained = (float(pca.explained_variance_ratio_[0]), float(pca.explained_variance_ratio_[1]))
    if "PCA" in methods:
        coordinates["PCA"] = pca_points
    reduced_first = width > PCA_BEFORE_NONLINEAR and count > PCA_BEFORE_NONLINEAR
    nonlinear = [
        method for method in ("t-SNE", "UMAP") if method in methods and (method != "UMAP" or umap_module is not None)
    ]
    reduced = points
    if reduced_first and nonlinear:
        reduced = PCA(n_components=PCA_BEFORE_NONLINEAR, random_state=seed).fit_transform(points)
    for method in nonlinear:
        if count < MIN_POINTS_NONLINEAR:
            coordinates[method] = f"too few points ({count})"
            continue
        started = time.perf_counter()
        coordinates[method] = _tsne(reduced, seed) if method == "t-SNE" else _umap(reduced, seed, umap_module)  # type: ignore[arg-type]
        log.info("%s of %d %s in %.1f s", method, count, name, time.perf_counter() - started)
    titles = {"PCA": f"PCA ({explained[0]:.0%} + {explained[1]:.0%} of variance)", "t-SNE": "t-SNE", "UMAP": "UMAP"}
    return Projection(
        coordinates=coordinates,
        titles={method: titles[method] for method in coordinates},
        is_buyer=buyers,
        total=total,
        width=width,
        dropped=dropped,
        explained_variance=explained,
        reduced_first=reduced_first and bool(nonlinear),
    )
