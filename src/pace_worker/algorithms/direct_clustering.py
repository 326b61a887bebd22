"""The steps of DIRECT sampling after the encoder (Qi et al., npj Comput. Mater. 2024), as small
scikit-learn estimators: StandardScaler → :class:`WeightedPCA` → :class:`BirchClustering`,
then :func:`pace_worker.algorithms.cluster_picks.pick_per_cluster` (and its coverage_score).

Each step is swappable: :func:`direct_pipeline` composes them as a ``sklearn.pipeline.Pipeline``.
DIRECT within each chemical system and kind of periodicity is
:class:`pace_worker.algorithms.direct_strata.StratifiedDirect`.
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin, clone
from sklearn.cluster import AgglomerativeClustering, Birch, KMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pace_worker.parallel.forked_call import ForkedCall, ForkedCallFailed

AGGLOMERATIVE_MAX_SUBCLUSTERS = 5000  # above: the global step is a size-weighted k-means


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
    threshold is lowered (× ``shrink``) and it is refitted, at most ``MAX_REFITS`` times, as DIRECT
    does for ``n_clusters``; the margin keeps one subcluster (radius up to the threshold, filled in
    arrival order) from straddling two groups that the global step should separate. The start ``threshold``
    defaults to half the RMS distance of the data to their mean. The global step groups the
    subclusters into ``n_clusters`` with Ward agglomerative clustering (scikit-learn's BIRCH default) or, above
    ``AGGLOMERATIVE_MAX_SUBCLUSTERS`` subclusters, with k-means weighted by subcluster size.
    If the data have fewer distinct points than ``n_clusters``, fewer clusters result; with
    ``n_clusters`` ≥ the number of points, each point is its own cluster.

    ``n_jobs`` (processes, as in scikit-learn; None: 1): with more than one, the fits at the next
    ``n_jobs - 1`` lower thresholds run at the same time in forked processes
    (:class:`pace_worker.parallel.forked_call.ForkedCall`), and the first threshold in order with
    enough subclusters is kept: the same result as one fit after another (each fit is
    deterministic), in fewer rounds; the fits not needed are stopped.

    Attributes: ``labels_``, ``n_clusters_``, ``n_subclusters_``, ``threshold_``, ``refits_``.
    """

    MAX_REFITS = 40  # times the threshold is lowered at most

    def __init__(self, n_clusters: int = 100, threshold: Optional[float] = None, oversample: float = 2.0,
                 shrink: float = 0.6, chunk_size: int = 20000, random_state: int = 0, n_jobs: Optional[int] = None):
        self.n_clusters = n_clusters
        self.threshold = threshold
        self.oversample = oversample
        self.shrink = shrink
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _birch(self, X, threshold):
        birch = Birch(threshold=threshold, n_clusters=None, compute_labels=False)
        for start in range(0, len(X), self.chunk_size):
            birch.partial_fit(X[start:start + self.chunk_size])
        return birch

    def _birch_without_tree(self, X, threshold):
        """:meth:`_birch` as a forked process sends it back: without its CF tree (``root_``,
        ``dummy_leaf_``), which ``predict`` does not use (it needs the subcluster centres)."""
        birch = self._birch(X, threshold)
        birch.root_ = birch.dummy_leaf_ = None
        return birch

    def _search(self, X, threshold: float, wanted: int):
        """``(birch, refits)``: the fit at the first of ``threshold``, ``threshold × shrink``, …
        (at most ``MAX_REFITS`` times lowered) with at least ``wanted`` subclusters, else at the
        lowest. Rounds of ``n_jobs`` thresholds: the first here, the others in forked processes."""
        thresholds = [threshold]
        for _ in range(self.MAX_REFITS):
            thresholds.append(thresholds[-1] * self.shrink)  # as lowering it step by step gives
        jobs, last = max(1, int(self.n_jobs or 1)), len(thresholds) - 1
        for first in range(0, last + 1, jobs):
            rounds = range(first, min(first + jobs, last + 1))
            ahead = {k: ForkedCall(self._birch_without_tree, X, thresholds[k]) for k in rounds[1:]}
            try:
                for k in rounds:
                    birch = self._birch(X, thresholds[k]) if k not in ahead else self._forked_or_here(
                        ahead[k], X, thresholds[k])
                    if len(birch.subcluster_centers_) >= wanted or k == last:
                        return birch, k
            finally:
                for call in ahead.values():
                    call.cancel()
        raise AssertionError("unreachable: the last threshold returns")

    def _forked_or_here(self, call: ForkedCall, X, threshold):
        try:
            return call.result()
        except ForkedCallFailed:  # the fork failed or died (memory): the same fit here
            return self._birch(X, threshold)

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
        wanted = min(len(X), int(np.ceil(self.oversample * self.n_clusters)))
        birch, self.refits_ = self._search(X, threshold, wanted)
        self.threshold_ = birch.threshold
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

            return AgglomerativeClustering(n_clusters=n).fit_predict(centers)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return KMeans(n_clusters=n, n_init=1, random_state=self.random_state).fit(
                centers, sample_weight=sizes).labels_

    def fit_predict(self, X, y=None, **kwargs):
        return self.fit(X).labels_


def direct_pipeline(n_clusters: int, pca: Optional[WeightedPCA] = None, threshold: Optional[float] = None,
                    random_state: int = 0, n_jobs: Optional[int] = None) -> Pipeline:
    """StandardScaler → ``pca`` (a clone; default: :class:`WeightedPCA` by the Kaiser rule) →
    BirchClustering into ``n_clusters`` from start threshold ``threshold`` (fit on structure
    features; ``n_jobs`` processes for its threshold search)."""
    return Pipeline([("scale", StandardScaler()), ("pca", clone(pca) if pca is not None else WeightedPCA()),
                     ("birch", BirchClustering(n_clusters, threshold, random_state=random_state, n_jobs=n_jobs))])
