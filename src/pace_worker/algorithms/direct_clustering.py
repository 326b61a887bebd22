"""The steps of DIRECT sampling after the encoder (Qi et al., npj Comput. Mater. 2024), as small
scikit-learn estimators: StandardScaler → :class:`WeightedPCA` → :class:`BirchClustering`,
then :func:`pick_per_cluster`; :func:`coverage_score` measures how well picks cover the pool.

Chemistry first: :func:`chemical_systems` groups the structures by their set of elements and
:func:`allocate_by_variety` shares the clusters among the groups by how varied each is
(:func:`natural_cluster_count`: its well-separated groups in descriptor space), the rest by the
square root of their sizes (:func:`allocate_clusters`), so DIRECT then runs within each chemical
system, where structure alone decides. In one feature space a family whose composition varies
(a random alloy) would take the principal components and the picks.

Each step is swappable: :func:`direct_pipeline` composes them as a ``sklearn.pipeline.Pipeline``.
"""
from __future__ import annotations

import logging
import warnings
from typing import Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


log = logging.getLogger(__name__)

AGGLOMERATIVE_MAX_SUBCLUSTERS = 5000  # above: the global step is a size-weighted k-means
# natural_cluster_count: a jump in Ward merge height of at least this factor separates groups
# (rattled and strained copies of one structure: at most ~2.7 measured, distinct families 6-8)
NATURAL_MIN_GAP = 4.0
NATURAL_MAX_ROWS = 2000  # the count is made on at most this many evenly spaced rows
MIN_GROUP_ROWS = 3  # natural groups average at least this many rows (two near-twins are no group)


class WeightedPCA(TransformerMixin, BaseEstimator):
    """PCA keeping components by the Kaiser rule (eigenvalue > 1 on standardised data) or
    ``n_components``; the kept components are scaled by their explained-variance ratio (as DIRECT).

    Attributes: ``n_components_``, ``explained_variance_``, ``explained_variance_ratio_`` (kept
    components), ``pca_`` (the full fitted PCA).
    """

    def __init__(self, n_components: Optional[int] = None, weighted: bool = True):
        self.n_components = n_components
        self.weighted = weighted

    def fit(self, X, y=None):
        if self.n_components is not None and self.n_components < 1:
            raise ValueError(f"n_components must be >= 1 or None (Kaiser rule), got {self.n_components}")
        self.pca_ = PCA(svd_solver="full").fit(X)
        if self.n_components is None:
            k = int(np.sum(self.pca_.explained_variance_ > 1.0))
        else:
            k = self.n_components
        self.n_components_ = max(1, min(k, len(self.pca_.explained_variance_)))
        self.explained_variance_ = self.pca_.explained_variance_[:self.n_components_]
        self.explained_variance_ratio_ = self.pca_.explained_variance_ratio_[:self.n_components_]
        return self

    def transform_unweighted(self, X) -> np.ndarray:
        return self.pca_.transform(X)[:, :self.n_components_]

    def weigh(self, pcs: np.ndarray) -> np.ndarray:
        """Unweighted kept PCs → the space the clustering works in."""
        return pcs * self.explained_variance_ratio_ if self.weighted else pcs

    def transform(self, X) -> np.ndarray:
        return self.weigh(self.transform_unweighted(X))


class BirchClustering(ClusterMixin, BaseEstimator):
    """BIRCH into ``n_clusters`` clusters, fed by ``partial_fit`` in chunks of ``chunk_size``.

    If BIRCH finds fewer than ``oversample × n_clusters`` subclusters (at most one per point) its
    threshold is lowered (× ``shrink``) and it is refitted, as DIRECT does for ``n_clusters``; the
    margin keeps one subcluster (radius up to the threshold, filled in arrival order) from
    straddling two groups that the global step should separate. The start ``threshold``
    defaults to half the RMS distance of the data to their mean. The global step groups the
    subclusters into ``n_clusters`` with Ward agglomerative clustering (scikit-learn's BIRCH default) or, above
    ``AGGLOMERATIVE_MAX_SUBCLUSTERS`` subclusters, with k-means weighted by subcluster size.
    If the data have fewer distinct points than ``n_clusters``, fewer clusters result; with
    ``n_clusters`` ≥ the number of points, each point is its own cluster.

    Attributes: ``labels_``, ``n_clusters_``, ``n_subclusters_``, ``threshold_``, ``refits_``.
    """

    def __init__(self, n_clusters: int = 100, threshold: Optional[float] = None, oversample: float = 2.0,
                 shrink: float = 0.6, chunk_size: int = 20000, max_refits: int = 40, random_state: int = 0):
        self.n_clusters = n_clusters
        self.threshold = threshold
        self.oversample = oversample
        self.shrink = shrink
        self.chunk_size = chunk_size
        self.max_refits = max_refits
        self.random_state = random_state

    def _birch(self, X, threshold):
        from sklearn.cluster import Birch

        birch = Birch(threshold=threshold, n_clusters=None, compute_labels=False)
        for start in range(0, len(X), self.chunk_size):
            birch.partial_fit(X[start:start + self.chunk_size])
        return birch

    def fit(self, X, y=None):
        if int(self.n_clusters) < 1:
            raise ValueError(f"n_clusters must be >= 1, got {self.n_clusters}")
        X = np.asarray(X, dtype=np.float64)
        if self.n_clusters >= len(X):  # every point is its own cluster
            self.labels_ = np.arange(len(X))
            self.n_clusters_ = self.n_subclusters_ = len(X)
            self.threshold_, self.refits_ = 0.0, 0
            return self
        spread = float(np.sqrt(((X - X.mean(axis=0)) ** 2).sum(axis=1).mean()))
        threshold = self.threshold if self.threshold is not None else max(0.5 * spread, 1e-12)
        self.refits_ = 0
        birch = self._birch(X, threshold)
        wanted = min(len(X), int(np.ceil(self.oversample * self.n_clusters)))
        while len(birch.subcluster_centers_) < wanted and self.refits_ < self.max_refits:
            threshold *= self.shrink
            self.refits_ += 1
            birch = self._birch(X, threshold)
        self.threshold_ = threshold
        centers = birch.subcluster_centers_
        self.n_subclusters_ = len(centers)
        sub_labels = birch.predict(X)  # index of the nearest subcluster
        n = min(int(self.n_clusters), self.n_subclusters_)
        global_labels = self._global_step(centers, np.bincount(sub_labels, minlength=len(centers)), n)
        labels = global_labels[sub_labels]
        # renumber clusters by their first member, so labels do not depend on the global step's order
        _, first = np.unique(labels, return_index=True)
        order = np.argsort(np.argsort(first))
        self.labels_ = order[np.searchsorted(np.unique(labels), labels)]
        self.n_clusters_ = int(self.labels_.max()) + 1
        return self

    def _global_step(self, centers: np.ndarray, sizes: np.ndarray, n: int) -> np.ndarray:
        if n == len(centers):
            return np.arange(len(centers))
        if len(centers) <= AGGLOMERATIVE_MAX_SUBCLUSTERS:
            from sklearn.cluster import AgglomerativeClustering

            return AgglomerativeClustering(n_clusters=n).fit_predict(centers)
        from sklearn.cluster import KMeans

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return KMeans(n_clusters=n, n_init=1, random_state=self.random_state).fit(
                centers, sample_weight=sizes).labels_

    def fit_predict(self, X, y=None, **kwargs):
        return self.fit(X).labels_


def direct_pipeline(n_clusters: int, n_components: Optional[int] = None, threshold: Optional[float] = None,
                    random_state: int = 0, weighted: bool = True) -> Pipeline:
    """StandardScaler → WeightedPCA → BirchClustering (fit on structure features)."""
    return Pipeline([("scale", StandardScaler()), ("pca", WeightedPCA(n_components, weighted)),
                     ("birch", BirchClustering(n_clusters, threshold, random_state=random_state))])


# which members of a cluster :func:`pick_per_cluster` can pick (config and CLI choices derive from it)
SELECTIONS: tuple[str, ...] = ("center", "random", "smallest")


def pick_per_cluster(X: np.ndarray, labels: np.ndarray, k: int = 1, selection: str = "center",
                     n_atoms: Optional[Sequence[int]] = None, seed: int = 0) -> list[tuple[int, int]]:
    """``(row, cluster)`` of up to ``k`` members per cluster, clusters in label order.

    * ``center``: the members closest to the cluster's true centroid (mean of its members in ``X``);
    * ``random``: uniformly drawn members (seeded);
    * ``smallest``: the members with the fewest atoms (cheapest to label), ties by distance to the centroid.

    A cluster with fewer than ``k`` members gives all of them.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got '{selection}'")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(labels.max() + 2))
    picks = []
    for c in range(labels.max() + 1):
        members = order[bounds[c]:bounds[c + 1]]
        if not len(members):
            continue
        if selection == "random":
            chosen = np.sort(rng.choice(members, size=min(k, len(members)), replace=False))
        else:
            distance = np.linalg.norm(X[members] - X[members].mean(axis=0), axis=1)
            keys = (distance,) if selection == "center" else (distance, np.asarray(n_atoms)[members])
            chosen = members[np.lexsort(keys)[:k]]  # lexsort: last key is the primary one
        picks.extend((int(m), c) for m in chosen)
    return picks


def coverage_score(pcs: np.ndarray, picks: Sequence[int], bins: int = 50) -> float:
    """Mean over principal components of the fraction of histogram bins occupied by the pool that
    the picks also occupy; per component, ``bins`` equal-width bins span the pool's range."""
    picks = np.asarray(picks, dtype=int)
    fractions = []
    for column in np.asarray(pcs).T:
        lo, hi = float(column.min()), float(column.max())
        if hi <= lo:
            fractions.append(1.0)
            continue
        edges = np.linspace(lo, hi, bins + 1)
        occupied = np.unique(np.clip(np.searchsorted(edges, column, side="right") - 1, 0, bins - 1))
        hit = np.unique(np.clip(np.searchsorted(edges, column[picks], side="right") - 1, 0, bins - 1))
        fractions.append(len(np.intersect1d(hit, occupied)) / len(occupied))
    return float(np.mean(fractions))


def chemical_systems(composition: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(systems, system_of_row)``: the distinct sets of elements present (boolean rows, one per
    system, in sorted order) and the index of each structure's system, from composition
    fractions ``[n_structures, n_elements]``."""
    present = np.asarray(composition) > 0
    systems, system_of_row = np.unique(present, axis=0, return_inverse=True)
    return systems, np.asarray(system_of_row).reshape(-1)


def allocate_clusters(sizes: Sequence[int], n_clusters: int, power: float = 0.5,
                      start: Optional[Sequence[int]] = None) -> list[int]:
    """Clusters per group, proportional to the group's size to the ``power`` (default: the square
    root), at least one per group while clusters last and at most its size; largest remainders
    round. Square root: between proportional (``power=1``, what random picks give: a rare group
    gets next to nothing) and equal (a big, varied group gets as few as a small uniform one).
    ``start``: clusters the groups already have (instead of one each); the rest is shared."""
    sizes = np.asarray(sizes, dtype=int)
    n_clusters = int(min(n_clusters, sizes.sum()))
    alloc = np.zeros(len(sizes), dtype=int)
    if n_clusters <= 0 or not len(sizes):
        return alloc.tolist()
    if start is not None:
        alloc = np.asarray(start, dtype=int).copy()
    elif n_clusters < len(sizes):  # not enough for one each: the largest groups get one
        alloc[np.argsort(-sizes, kind="stable")[:n_clusters]] = 1
        return alloc.tolist()
    else:
        alloc[:] = 1
    left = n_clusters - int(alloc.sum())
    weights = sizes.astype(float) ** power
    while left > 0:
        room = sizes - alloc
        open_ = room > 0
        share = np.where(open_, weights, 0.0)
        ideal = share / share.sum() * left
        add = np.minimum(np.floor(ideal).astype(int), room)
        if add.sum() == 0:  # largest remainders, one each
            remainder = np.where(open_, ideal - np.floor(ideal), -1.0)
            for g in np.argsort(-remainder, kind="stable")[:left]:
                if room[g] > 0:
                    add[g] = 1
        alloc += add
        left -= int(add.sum())
    return alloc.tolist()


def raise_to_proportional(natural: Sequence[int], sizes: Sequence[int]) -> list[int]:
    """Clusters per stratum: ``natural`` (what clustering all strata together gave each), with every
    stratum raised to at least its proportional share of the same total (:func:`allocate_clusters`
    with ``power=1``: what random picks would give it). The clusters that raise one stratum are
    taken, one at a time, from the stratum furthest above its own share; the total is unchanged.

    Clustering gives a compact stratum (rattled copies of one small cluster, one slab) as few
    clusters as its spread asks for; this floor keeps such a kind of structure from getting fewer
    picks than a random subset would give it."""
    natural = np.asarray(natural, dtype=int)
    share = np.asarray(allocate_clusters(sizes, int(natural.sum()), power=1.0), dtype=int)
    target = np.maximum(natural, share)
    while target.sum() > natural.sum():
        above = target - share
        target[int(np.argmax(above))] -= 1  # first of equals: the order of the strata decides
    return target.tolist()


def natural_cluster_count(X: np.ndarray, max_clusters: int = 20, min_gap: float = NATURAL_MIN_GAP,
                          max_rows: int = NATURAL_MAX_ROWS) -> int:
    """The number of well-separated groups among the rows of ``X`` (1 when there are none).

    Ward's dendrogram of (at most ``max_rows`` evenly spaced) rows: going from ``k + 1`` to ``k``
    groups costs a merge of height ``h(k)``. Where one merge is ``min_gap`` times higher than the
    one before it (``h(k - 1) / h(k)``, largest over ``k`` = 2 … ``max_clusters``, and at least
    three rows per group on average), the data fall
    into ``k`` groups that are far apart compared with their own spread; without such a jump
    (one family of rattled, strained copies, a continuum) the count is 1. Scale-free: the ratio
    of heights does not change when ``X`` is scaled, so systems described by different columns
    compare.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> natural_cluster_count(np.vstack([rng.normal(c, 0.1, (20, 3)) for c in (0, 5, 10)]))
    3
    >>> natural_cluster_count(rng.normal(0, 1, (60, 3)))
    1
    """
    from scipy.cluster.hierarchy import linkage

    X = np.asarray(X, dtype=np.float64)
    X = X[np.linspace(0, len(X) - 1, min(len(X), max_rows)).astype(int)] if len(X) else X
    largest = min(max_clusters, len(X) // MIN_GROUP_ROWS)  # a group has a few members, not one outlier
    if largest < 2 or not np.any(np.ptp(X, axis=0) > 0):
        return 1
    heights = linkage(X, "ward")[:, 2]  # ascending: heights[-1] merges the last two groups
    ks = np.arange(2, largest + 1)
    below = heights[-ks]  # h(k): the merge from k + 1 groups to k
    above = heights[-(ks - 1)]  # h(k - 1): the merge from k groups to k - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = np.where(below > 0, above / np.maximum(below, 1e-300), np.where(above > 0, np.inf, 1.0))
    best = int(np.argmax(gaps))
    return int(ks[best]) if gaps[best] >= min_gap else 1


def allocate_by_variety(variety: Sequence[int], sizes: Sequence[int], n_clusters: int) -> list[int]:
    """Clusters per group: first by how varied each group is, the rest by the square root of its size.

    ``variety[g]`` is the number of distinct groups of structures that group ``g`` holds (its
    natural clusters, at least its kinds of periodicity; at most its size).

    * fewer clusters than groups: one each for the most varied groups (ties: the larger);
    * up to the total variety: shared in proportion to variety, at least one per group, never
      more than a group's variety (largest remainders round);
    * more: every group gets its variety, and the clusters left are shared by the square root of
      the sizes (:func:`allocate_clusters`), never more than a group has.

    So five visibly different families get one cluster each whatever their head-counts, and a
    small system of three families next to a large uniform one gets three when four are asked
    for; large budgets are shared as before, by size.
    """
    variety = np.minimum(np.maximum(np.asarray(variety, dtype=int), 1), np.asarray(sizes, dtype=int))
    sizes = np.asarray(sizes, dtype=int)
    n_clusters = int(min(n_clusters, sizes.sum()))
    alloc = np.zeros(len(sizes), dtype=int)
    if n_clusters <= 0 or not len(sizes):
        return alloc.tolist()
    if n_clusters <= len(sizes):
        alloc[np.lexsort((-sizes, -variety))[:n_clusters]] = 1  # lexsort: last key is the primary one
        return alloc.tolist()
    if n_clusters <= variety.sum():
        alloc[:] = 1
        left = n_clusters - len(sizes)
        ideal = (variety - 1) / max(int((variety - 1).sum()), 1) * left
        add = np.minimum(np.floor(ideal).astype(int), variety - 1)
        remainder = np.where(add < variety - 1, ideal - add, -1.0)
        for g in np.argsort(-remainder, kind="stable")[:left - int(add.sum())]:
            add[g] += 1
        return (alloc + add).tolist()
    return allocate_clusters(sizes, n_clusters, start=variety)
