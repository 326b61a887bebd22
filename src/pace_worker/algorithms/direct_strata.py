"""DIRECT within strata: the clusters are shared among chemical systems by how varied each is
(its natural groups in descriptor space, at least its kinds of periodicity), the rest by the
square root of their sizes; within a system no kind of periodicity gets fewer than its
proportional share. The estimators themselves are in
:mod:`pace_worker.algorithms.direct_clustering`.

:func:`select_by_system` takes the structure features of a pool (numpy; nothing is read or
written here) and returns the picks, every row's cluster and the whole pool's principal
components (for the report, the coverage score and the picture).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pace_worker.algorithms.direct_clustering import (
    NATURAL_MAX_ROWS,
    WeightedPCA,
    allocate_by_variety,
    chemical_systems,
    direct_pipeline,
    natural_cluster_count,
    pick_per_cluster,
    raise_to_proportional,
)

log = logging.getLogger(__name__)

OVERVIEW_FIT_ROWS = 20000  # the whole pool's PCA is fitted on at most this many evenly spaced rows


def _cluster(features: np.ndarray, n_clusters: int, options, seed: int):
    """(fitted steps by name, cluster label per row, unweighted kept PCs per row)."""
    pipeline = direct_pipeline(n_clusters, options.n_components, options.birch_threshold, seed,
                               options.weight_components)
    pipeline.fit(features)
    steps = pipeline.named_steps
    pcs = steps["pca"].transform_unweighted(steps["scale"].transform(features))
    if steps["birch"].n_clusters_ < min(n_clusters, len(features)):
        log.warning("the pool has only %d distinct structures by their descriptors: %d clusters instead of %d",
                    steps["birch"].n_subclusters_, steps["birch"].n_clusters_, n_clusters)
    return steps, steps["birch"].labels_, pcs


class _Numbering:
    """Cluster ids across groups of rows: each group's local ids follow the previous groups' ids."""

    def __init__(self, n_rows: int):
        self.labels = np.full(n_rows, -1, dtype=int)
        self.picks: list[tuple[int, int]] = []
        self.next_id = 0

    def add(self, rows: np.ndarray, local: np.ndarray, local_picks: list[tuple[int, int]]) -> None:
        self.labels[rows] = local + self.next_id
        self.picks.extend((int(rows[r]), int(c) + self.next_id) for r, c in local_picks)
        self.next_id += int(local.max()) + 1


@dataclass
class Selection:
    picks: list            # (row, cluster id) pairs, clusters numbered across systems
    labels: np.ndarray     # cluster id of every row
    systems: list          # per chemical system: elements, structures, clusters, picks
    overview: dict         # scale/pca of the whole pool (report, coverage, plot) and birch of the largest system
    pcs: np.ndarray        # unweighted whole-pool PCs per row


PERIODICITY = {3: "bulk (3D periodic)", 2: "slab (2D periodic)", 1: "wire (1D periodic)",
               0: "cluster or molecule (not periodic)"}


def select_by_system(features: np.ndarray, layout, n_clusters: int, k: int, selection: str, n_atoms: np.ndarray,
                     options, seed: int, periodic_dims: Optional[np.ndarray] = None) -> Selection:
    """DIRECT within each chemical system (:func:`pace_worker.algorithms.direct_clustering.chemical_systems`), with the
    clusters shared by :func:`pace_worker.algorithms.direct_clustering.allocate_by_variety` over each system's
    :func:`system_variety`; each system's features are its elements' columns only. Within a system,
    each kind of periodicity (bulk, slab, wire, cluster) gets at least its proportional share of
    the system's clusters (:func:`select_in_system`). Rows of a system that gets no cluster (fewer
    clusters than systems) keep the label -1."""
    elements, offsets = layout
    periodic_dims = np.full(len(features), 3, dtype=np.int8) if periodic_dims is None else periodic_dims
    composition = features[:, offsets[-1]:]
    systems, system_of_row = chemical_systems(composition)
    sizes = np.bincount(system_of_row, minlength=len(systems))
    rows_of = [np.flatnonzero(system_of_row == s) for s in range(len(systems))]
    columns_of = [np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i, present in enumerate(systems[s])
                                  if present] + [offsets[-1] + np.flatnonzero(systems[s])])
                  for s in range(len(systems))]
    variety = [system_variety(features[rows_of[s]][:, columns_of[s]], periodic_dims[rows_of[s]], options)
               for s in range(len(systems))]
    allocation = allocate_by_variety(variety, sizes, n_clusters)
    numbering = _Numbering(len(features))
    info = []
    largest_birch = None
    for s in np.argsort(-sizes, kind="stable"):
        rows = rows_of[s]
        names = [el for el, present in zip(elements, systems[s]) if present]
        entry = {"elements": names, "n_structures": int(len(rows)), "n_groups": int(variety[s]),
                 "n_clusters": int(allocation[s])}
        info.append(entry)
        if allocation[s] == 0:
            entry["n_picked"] = 0
            continue
        local, local_picks, birch = select_in_system(features[rows][:, columns_of[s]], int(allocation[s]), k,
                                                     selection, n_atoms[rows], options, seed, periodic_dims[rows],
                                                     entry)
        largest_birch = largest_birch or birch
        numbering.add(rows, local, local_picks)
        entry["n_picked"] = len(local_picks)
    # the whole pool's PCs, for the report, the coverage score and the picture: fitted on at most
    # OVERVIEW_FIT_ROWS evenly spaced rows and applied in blocks (memory stays that of one block)
    overview = Pipeline([("scale", StandardScaler()), ("pca", WeightedPCA(options.n_components,
                                                                           options.weight_components))])
    overview.fit(features[np.linspace(0, len(features) - 1, min(len(features), OVERVIEW_FIT_ROWS)).astype(int)])
    steps = dict(overview.named_steps)
    steps["birch"] = largest_birch or _Trivial(numbering.next_id)
    pcs = np.concatenate([steps["pca"].transform_unweighted(steps["scale"].transform(features[i:i + OVERVIEW_FIT_ROWS]))
                          for i in range(0, len(features), OVERVIEW_FIT_ROWS)]).astype(np.float32)
    return Selection(picks=numbering.picks, labels=numbering.labels, systems=info, overview=steps, pcs=pcs)


def system_variety(X: np.ndarray, periodic_dims: np.ndarray, options) -> int:
    """How many distinct groups of structures one chemical system holds: its kinds of periodicity
    (bulk, slab, wire, cluster are distinct families by construction) or, if more, its natural
    clusters in the space DIRECT clusters it in (standardised, PCA, weighted components; fitted
    on at most ``NATURAL_MAX_ROWS`` evenly spaced rows)."""
    kinds = len(np.unique(periodic_dims))
    rows = np.linspace(0, len(X) - 1, min(len(X), NATURAL_MAX_ROWS)).astype(int)
    sample = np.asarray(X[rows], dtype=np.float64)
    if len(sample) < 4 or not np.any(np.ptp(sample, axis=0) > 0):
        return min(kinds, len(X))
    space = Pipeline([("scale", StandardScaler()), ("pca", WeightedPCA(options.n_components,
                                                                        options.weight_components))])
    return min(max(kinds, natural_cluster_count(space.fit_transform(sample))), len(X))


def _direct(X: np.ndarray, n: int, k: int, selection: str, n_atoms: np.ndarray, options, seed: int):
    """``(labels, (row, cluster) picks, BIRCH or None, kept components or None)`` of DIRECT on ``X``."""
    if n >= len(X) or not np.any(np.ptp(X, axis=0) > 0):
        labels = np.arange(len(X)) if n >= len(X) else np.zeros(len(X), dtype=int)
        return labels, pick_per_cluster(X, labels, k, selection, n_atoms, seed), None, None
    steps, labels, pcs = _cluster(X, n, options, seed)
    picks = pick_per_cluster(steps["pca"].weigh(pcs), labels, k, selection, n_atoms, seed)
    return labels, picks, steps["birch"], int(steps["pca"].n_components_)


def select_in_system(X: np.ndarray, n: int, k: int, selection: str, n_atoms: np.ndarray, options, seed: int,
                     periodic_dims: np.ndarray, entry: dict):
    """``(labels, picks, BIRCH or None)`` of DIRECT on one chemical system's rows; ``entry`` (its
    report) gets ``n_components`` and, when strata were clustered apart, ``strata``.

    DIRECT runs on all rows together first. If that leaves a kind of periodicity with fewer
    clusters than its proportional share (:func:`pace_worker.algorithms.direct_clustering.raise_to_proportional`), each
    kind is clustered on its own with the raised allocation."""
    labels, picks, birch, n_components = _direct(X, n, k, selection, n_atoms, options, seed)
    if n_components is not None:
        entry["n_components"] = n_components
    kinds, kind_of_row = np.unique(periodic_dims, return_inverse=True)
    if len(kinds) < 2 or n >= len(X):
        return labels, picks, birch
    # each cluster counts for the kind most of its members have
    majority = np.array([np.bincount(kind_of_row[labels == c], minlength=len(kinds)).argmax()
                         for c in range(labels.max() + 1)])
    natural = np.bincount(majority, minlength=len(kinds))
    raised = raise_to_proportional(natural, np.bincount(kind_of_row, minlength=len(kinds)))
    # fewer clusters than kinds: not every kind can have one, and a kind clustered on its own
    # needs at least one, so the clustering of all rows together stands
    if list(natural) == raised or 0 in raised:
        return labels, picks, birch
    numbering, strata, first_birch = _Numbering(len(X)), {}, None
    for kind in np.argsort(-np.asarray(raised), kind="stable"):
        rows = np.flatnonzero(kind_of_row == kind)
        local, local_picks, kind_birch, _ = _direct(X[rows], raised[kind], k, selection, n_atoms[rows], options,
                                                    seed)
        first_birch = first_birch or kind_birch
        numbering.add(rows, local, local_picks)
        strata[PERIODICITY[int(kinds[kind])]] = {"n_structures": int(len(rows)), "n_clusters": int(raised[kind]),
                                                 "n_clusters_together": int(natural[kind]),
                                                 "n_picked": len(local_picks)}
    entry["strata"] = strata
    return numbering.labels, numbering.picks, first_birch or birch


@dataclass
class _Trivial:
    """Stands in for BIRCH in the report when no system needed clustering (every row picked)."""

    n_clusters_: int
    n_subclusters_: int = 0
    threshold_: float = 0.0
    refits_: int = 0
