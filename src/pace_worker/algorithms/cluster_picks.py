"""Which members of each cluster DIRECT picks (:func:`pick_per_cluster`, its ``SELECTIONS``) and
how well picks cover a pool in principal-component space (:func:`coverage_score`).

numpy only: the command line and the config take their choices from here without loading
scikit-learn (about a second of every command's start).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

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
