"""How many DIRECT clusters each chemical system, and each kind of periodicity within one, gets.

Chemistry first: :func:`chemical_systems` groups the structures by their set of elements and
:func:`allocate_by_variety` shares the clusters among the systems by how varied each is
(:func:`system_variety`: its kinds of periodicity or, if more, its well-separated groups in
descriptor space, :func:`natural_cluster_count`), the rest by the square root of their sizes
(:func:`allocate_clusters`). In one feature space a family whose composition varies (a random
alloy) would take the principal components and the picks; within a system structure alone
decides. Within a system, :func:`raise_to_proportional` keeps every kind of periodicity at or
above its proportional share.

Every rule keeps the total it is given (at most the number of structures) and never gives a
group more clusters than it has structures. The estimator that applies them is
:class:`pace_worker.algorithms.direct_strata.StratifiedDirect`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy.cluster.hierarchy import linkage
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pace_worker.algorithms.direct_clustering import WeightedPCA

# natural_cluster_count: a jump in Ward merge height of at least this factor separates groups
# (rattled and strained copies of one structure: at most ~2.7 measured, distinct families 6-8)
NATURAL_MIN_GAP = 4.0
NATURAL_MAX_ROWS = 2000  # the count is made on at most this many evenly spaced rows
MIN_GROUP_ROWS = 3  # natural groups average at least this many rows (two near-twins are no group)


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


def system_variety(X: np.ndarray, periodic_dims: np.ndarray, pca: WeightedPCA) -> int:
    """How many distinct groups of structures one chemical system holds: its kinds of periodicity
    (bulk, slab, wire, cluster are distinct families by construction) or, if more, its natural
    clusters in the space DIRECT clusters it in (standardised, then a clone of ``pca``; fitted
    on at most ``NATURAL_MAX_ROWS`` evenly spaced rows). At most the number of rows."""
    kinds = len(np.unique(periodic_dims))
    rows = np.linspace(0, len(X) - 1, min(len(X), NATURAL_MAX_ROWS)).astype(int)
    sample = np.asarray(X[rows], dtype=np.float64)
    if len(sample) < 4 or not np.any(np.ptp(sample, axis=0) > 0):
        return min(kinds, len(X))
    space = Pipeline([("scale", StandardScaler()), ("pca", clone(pca))])
    return min(max(kinds, natural_cluster_count(space.fit_transform(sample))), len(X))
