"""DIRECT within strata: :class:`StratifiedDirect` clusters a pool's structure features (numpy;
nothing is read or written here) within each chemical system and picks ``k`` per cluster.

The clusters are shared among chemical systems by how varied each is (its natural groups in
descriptor space, at least its kinds of periodicity), the rest by the square root of their
sizes; within a system no kind of periodicity gets fewer than its proportional share. The rules
are in :mod:`pace_worker.algorithms.direct_allocation`, the DIRECT steps in
:mod:`pace_worker.algorithms.direct_clustering`.

Every row of a system given a cluster is in exactly one cluster; cluster ids are numbered across
systems (largest system first) and strata, with no gaps.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pace_worker.algorithms.cluster_picks import SELECTIONS, pick_per_cluster
from pace_worker.algorithms.direct_allocation import (
    allocate_by_variety,
    chemical_systems,
    raise_to_proportional,
    system_variety,
)
from pace_worker.algorithms.direct_clustering import BirchClustering, WeightedPCA, direct_pipeline

log = logging.getLogger(__name__)

OVERVIEW_FIT_ROWS = 20000  # the whole pool's PCA is fitted on at most this many evenly spaced rows

PERIODICITY = {3: "bulk (3D periodic)", 2: "slab (2D periodic)", 1: "wire (1D periodic)",
               0: "cluster or molecule (not periodic)"}


@dataclass
class Stratum:
    """One kind of periodicity of a chemical system, clustered on its own."""

    periodicity: str          # a value of PERIODICITY
    n_structures: int
    n_clusters: int           # its raised share of the system's clusters
    n_clusters_together: int  # the clusters it had when the system's rows were clustered together
    n_picked: int


@dataclass
class ChemicalSystem:
    """One set of elements of the pool and what DIRECT did with it."""

    elements: list[str]
    n_structures: int
    n_groups: int                       # its variety (direct_allocation.system_variety)
    n_clusters: int                     # its share of the clusters; 0: its rows are in no cluster
    n_picked: int = 0
    n_components: Optional[int] = None  # kept PCs of DIRECT on all its rows; None: not clustered by BIRCH
    strata: list[Stratum] = field(default_factory=list)  # empty: its rows were clustered together


@dataclass
class _Clustered:
    """DIRECT on one group of rows: local cluster ids from 0, ``(row, cluster)`` picks, the BIRCH
    that made the clusters (None when every row is its own cluster or all rows are one)."""

    labels: np.ndarray
    picks: list[tuple[int, int]]
    birch: Optional[BirchClustering] = None
    n_components: Optional[int] = None
    strata: list[Stratum] = field(default_factory=list)


class _Numbering:
    """Cluster ids across groups of rows: each group's local ids follow the previous groups' ids."""

    def __init__(self, n_rows: int):
        self.labels = np.full(n_rows, -1, dtype=int)
        self.picks: list[tuple[int, int]] = []
        self.next_id = 0

    def add(self, rows: np.ndarray, clustered: _Clustered) -> None:
        self.labels[rows] = clustered.labels + self.next_id
        self.picks.extend((int(rows[r]), int(c) + self.next_id) for r, c in clustered.picks)
        self.next_id += int(clustered.labels.max()) + 1


@dataclass
class _SystemRows:
    """Where one chemical system is in the feature matrix: its rows and its elements' columns."""

    elements: list[str]
    rows: np.ndarray
    columns: np.ndarray


def _systems_of(X: np.ndarray, layout: tuple[Sequence[str], Sequence[int]]) -> list[_SystemRows]:
    """The chemical systems of the rows of ``X`` (in :func:`chemical_systems` order); a system's
    columns are its elements' feature columns and composition fractions."""
    elements, offsets = layout
    systems, system_of_row = chemical_systems(X[:, offsets[-1]:])
    found = []
    for s, present in enumerate(systems):
        blocks = [np.arange(offsets[i], offsets[i + 1]) for i, here in enumerate(present) if here]
        found.append(_SystemRows([el for el, here in zip(elements, present) if here],
                                 np.flatnonzero(system_of_row == s),
                                 np.concatenate(blocks + [offsets[-1] + np.flatnonzero(present)])))
    return found


@dataclass(eq=False, repr=False)  # scikit-learn's repr and identity, not a record's
class StratifiedDirect(BaseEstimator):
    """DIRECT sampling within each chemical system and kind of periodicity.

    The ``n_clusters`` clusters are shared among the chemical systems
    (:func:`pace_worker.algorithms.direct_allocation.allocate_by_variety` over each system's
    :func:`pace_worker.algorithms.direct_allocation.system_variety`); each system is clustered on its
    elements' columns only (StandardScaler → ``pca`` → BIRCH from ``birch_threshold``). Within a
    system, DIRECT runs on all rows together first; if that leaves a kind of periodicity (bulk,
    slab, wire, cluster) with fewer clusters than its proportional share
    (:func:`pace_worker.algorithms.direct_allocation.raise_to_proportional`), each kind is clustered
    on its own with the raised allocation. ``k_per_cluster`` members of each cluster are picked by
    ``selection`` (:func:`pace_worker.algorithms.cluster_picks.pick_per_cluster`).

    Parameters
    ----------
    n_clusters : int, number of clusters over the whole pool (≥ 1; at most the number of rows count).
    k_per_cluster : int, members picked per cluster (≥ 1).
    selection : one of ``SELECTIONS``.
    pca : WeightedPCA or None, cloned for every clustering (None: Kaiser rule, weighted components).
    birch_threshold : float or None, BIRCH's start threshold (> 0; None: from the data's spread).
    random_state : int, seed of every random choice.
    n_jobs : int or None, processes for each BIRCH's threshold search (:class:`BirchClustering`;
        the same result with any number).

    Attributes
    ----------
    labels_ : cluster id per row; -1 for rows of a system given no cluster (fewer clusters than systems).
    picks_ : ``(row, cluster id)`` pairs, by cluster.
    n_clusters_ : number of clusters made.
    systems_ : list of :class:`ChemicalSystem`, largest system first.
    overview_ : Pipeline (scale, pca) of the whole pool, fitted on at most ``OVERVIEW_FIT_ROWS`` rows.
    pcs_ : the whole pool's unweighted kept principal components per row (float32).
    n_subclusters_, birch_threshold_, threshold_lowered_ : the BIRCH of the largest system that needed
        one (its first stratum's when it was stratified); 0, 0.0, 0 when no system needed BIRCH.

    Examples
    --------
    >>> X = np.hstack([np.vstack([np.zeros((5, 2)), np.ones((5, 2))]), np.ones((10, 1))])
    >>> direct = StratifiedDirect(n_clusters=2).fit(X, layout=(["Cu"], [0, 2]))
    >>> [cluster for _, cluster in direct.picks_]
    [0, 1]
    """

    # the parameters, stored by the generated __init__ (scikit-learn reads them from its signature)
    n_clusters: int
    k_per_cluster: int = 1
    selection: str = "center"
    pca: Optional[WeightedPCA] = None
    birch_threshold: Optional[float] = None
    random_state: int = 0
    n_jobs: Optional[int] = None

    def fit(self, X, y=None, *, layout: tuple[Sequence[str], Sequence[int]], n_atoms: Optional[Sequence[int]] = None,
            periodic_dims: Optional[Sequence[int]] = None) -> "StratifiedDirect":
        """Cluster and pick. ``layout``: ``(elements, offsets)`` of the feature vector (element i's
        columns ``offsets[i]:offsets[i + 1]``, composition fractions after ``offsets[-1]``, as
        :func:`pace_worker.ace.descriptors.feature_layout`); ``n_atoms`` per row (needed by
        ``selection="smallest"``); ``periodic_dims`` per row (0–3; default: all bulk)."""
        self._check_parameters(n_atoms)
        X = np.asarray(X)
        n_atoms = np.ones(len(X), dtype=np.int64) if n_atoms is None else np.asarray(n_atoms)
        periodic_dims = np.full(len(X), 3, dtype=np.int8) if periodic_dims is None else np.asarray(periodic_dims)
        if len(n_atoms) != len(X) or len(periodic_dims) != len(X):
            raise ValueError(f"n_atoms ({len(n_atoms)}) and periodic_dims ({len(periodic_dims)}) must have one "
                             f"value per row of X ({len(X)})")
        pca = self.pca if self.pca is not None else WeightedPCA()
        systems = _systems_of(X, layout)
        sizes = np.array([len(s.rows) for s in systems])
        variety = [system_variety(X[s.rows][:, s.columns], periodic_dims[s.rows], pca) for s in systems]
        allocation = allocate_by_variety(variety, sizes, int(self.n_clusters))
        numbering, self.systems_, birches = _Numbering(len(X)), [], []
        for s in np.argsort(-sizes, kind="stable"):
            rows, n = systems[s].rows, int(allocation[s])
            record = ChemicalSystem(systems[s].elements, int(len(rows)), int(variety[s]), n)
            if n > 0:
                clustered = self._fit_system(X[rows][:, systems[s].columns], n, n_atoms[rows], periodic_dims[rows])
                numbering.add(rows, clustered)
                birches.append(clustered.birch)
                record.n_picked, record.n_components = len(clustered.picks), clustered.n_components
                record.strata = clustered.strata
            self.systems_.append(record)
        self.labels_, self.picks_, self.n_clusters_ = numbering.labels, numbering.picks, numbering.next_id
        self._keep_birch(next((b for b in birches if b is not None), None))
        self._fit_overview(X, pca)
        return self

    def _check_parameters(self, n_atoms) -> None:
        if int(self.n_clusters) < 1:
            raise ValueError(f"n_clusters must be >= 1, got {self.n_clusters}")
        if int(self.k_per_cluster) < 1:
            raise ValueError(f"k_per_cluster must be >= 1, got {self.k_per_cluster}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got '{self.selection}'")
        if self.selection == "smallest" and n_atoms is None:
            raise ValueError("selection 'smallest' needs n_atoms (the number of atoms of each row)")
        if self.birch_threshold is not None and not self.birch_threshold > 0:
            raise ValueError(f"birch_threshold must be > 0 or None, got {self.birch_threshold}")

    def _direct(self, X: np.ndarray, n: int, n_atoms: np.ndarray) -> _Clustered:
        """DIRECT on ``X`` into ``n`` clusters (each row its own when ``n`` ≥ its rows, one cluster
        when all rows are the same)."""
        k, seed = int(self.k_per_cluster), self.random_state
        if n >= len(X) or not np.any(np.ptp(X, axis=0) > 0):
            labels = np.arange(len(X)) if n >= len(X) else np.zeros(len(X), dtype=int)
            return _Clustered(labels, pick_per_cluster(X, labels, k, self.selection, n_atoms, seed))
        steps = direct_pipeline(n, self.pca, self.birch_threshold, seed, self.n_jobs).fit(X).named_steps
        birch = steps["birch"]
        if birch.n_clusters_ < min(n, len(X)):
            log.warning("the pool has only %d distinct structures by their descriptors: %d clusters instead of %d",
                        birch.n_subclusters_, birch.n_clusters_, n)
        weighted = steps["pca"].weigh(steps["pca"].transform_unweighted(steps["scale"].transform(X)))
        picks = pick_per_cluster(weighted, birch.labels_, k, self.selection, n_atoms, seed)
        return _Clustered(birch.labels_, picks, birch, int(steps["pca"].n_components_))

    def _fit_system(self, X: np.ndarray, n: int, n_atoms: np.ndarray, periodic_dims: np.ndarray) -> _Clustered:
        """DIRECT on one chemical system's rows, then, if a kind of periodicity got less than its
        proportional share, on each kind apart with the raised shares."""
        together = self._direct(X, n, n_atoms)
        kinds, kind_of_row = np.unique(periodic_dims, return_inverse=True)
        if len(kinds) < 2 or n >= len(X):
            return together
        # each cluster counts for the kind most of its members have
        majority = np.array([np.bincount(kind_of_row[together.labels == c], minlength=len(kinds)).argmax()
                             for c in range(together.labels.max() + 1)])
        natural = np.bincount(majority, minlength=len(kinds))
        raised = raise_to_proportional(natural, np.bincount(kind_of_row, minlength=len(kinds)))
        # fewer clusters than kinds: not every kind can have one, and a kind clustered on its own
        # needs at least one, so the clustering of all rows together stands
        if list(natural) == raised or 0 in raised:
            return together
        numbering, strata, birches = _Numbering(len(X)), [], []
        for kind in np.argsort(-np.asarray(raised), kind="stable"):
            rows = np.flatnonzero(kind_of_row == kind)
            alone = self._direct(X[rows], raised[kind], n_atoms[rows])
            numbering.add(rows, alone)
            birches.append(alone.birch)
            strata.append(Stratum(PERIODICITY[int(kinds[kind])], int(len(rows)), int(raised[kind]),
                                  int(natural[kind]), len(alone.picks)))
        birch = next((b for b in birches if b is not None), together.birch)
        return _Clustered(numbering.labels, numbering.picks, birch, together.n_components, strata)

    def _keep_birch(self, birch: Optional[BirchClustering]) -> None:
        self.n_subclusters_ = int(birch.n_subclusters_) if birch is not None else 0
        self.birch_threshold_ = float(birch.threshold_) if birch is not None else 0.0
        self.threshold_lowered_ = int(birch.refits_) if birch is not None else 0

    def _fit_overview(self, X: np.ndarray, pca: WeightedPCA) -> None:
        """The whole pool's PCs, for the report, the coverage score and the picture: fitted on at
        most ``OVERVIEW_FIT_ROWS`` evenly spaced rows and applied in blocks (memory stays that of
        one block)."""
        self.overview_ = Pipeline([("scale", StandardScaler()), ("pca", clone(pca))])
        self.overview_.fit(X[np.linspace(0, len(X) - 1, min(len(X), OVERVIEW_FIT_ROWS)).astype(int)])
        scale, fitted = self.overview_["scale"], self.overview_["pca"]
        self.pcs_ = np.concatenate([fitted.transform_unweighted(scale.transform(X[i:i + OVERVIEW_FIT_ROWS]))
                                    for i in range(0, len(X), OVERVIEW_FIT_ROWS)]).astype(np.float32)
