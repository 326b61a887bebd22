"""``direct_sample``: a diverse, representative subset of a raw pool (DIRECT sampling).

:func:`direct_sample` is the pure core (a :class:`DirectSampleRequest` in, a
:class:`DirectSampleResult` out). No labels and no potential are needed.

Steps
-----
1. Scan the pool (frame offsets and elements; no parsing of atoms).
2. Encode: per-structure ACE features (:mod:`pace_worker.ace.descriptors`), computed in chunks on
   worker processes that read their own byte ranges of the file; only the structure-level
   feature matrix is kept. Structures with elements the basis lacks are skipped and counted.
3. StandardScaler → PCA (Kaiser rule or ``n_components``; kept components weighted by their
   explained-variance ratio) → BIRCH into ``n_clusters`` (threshold lowered until there are
   enough subclusters) (:mod:`pace_worker.algorithms.direct_clustering`).
4. Pick ``k`` per cluster: ``center`` (closest to the true centroid of the members),
   ``random`` (seeded) or ``smallest`` (fewest atoms). ``n_clusters`` ≥ the usable pool picks all.

Outputs: the picks as extxyz (``info['cluster_id']``, ``info['pool_index']``; everything else
kept), ``<output>_report.json``, ``<output>_pca.png`` (pool and picks on the first two PCs) and
``<output>_descriptor_basis.yaml`` (the basis used, reusable with ``--potential``).

Coverage score (report): per kept principal component (unweighted), the fraction of the
equal-width bins over the pool's range that are occupied by the pool and also by the picks;
averaged over components. The number of bins is ``direct_sample.coverage_bins``, by default
min(50, number of picks) — so that picks spread perfectly over the pool's range score 1 for
small budgets too (with 10 picks and 50 bins no selection could score above ~0.2). Reported
for the picks and for a seeded uniform random subset of the same size.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from ase.data import chemical_symbols
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pace_worker.ace import potentials
from pace_worker.files.atomic_io import OutputGroup, companion_path, write_json
from pace_worker.config import MetaConfig, WorkerConfig
from pace_worker.ace.descriptors import FeatureBlock, feature_layout, features_chunk, load_basis, write_unfitted_basis
from pace_worker.algorithms.direct_clustering import (SELECTIONS, WeightedPCA, allocate_clusters, chemical_systems, coverage_score,
                                direct_pipeline, pick_per_cluster, raise_to_proportional)
from pace_worker.errors import InputError, check_readable_file
from pace_worker.parallel.executor import ChunkExecutor
from pace_worker.files.output_paths import check_outputs, same_file
from pace_worker.files.frames import frame_offsets, pool_chunks, read_selected
from pace_worker.files.structures import SkippedStructures, write_extxyz

log = logging.getLogger(__name__)

SCHEMA = "pace-worker/direct_sample_report/1"
MAX_COVERAGE_BINS = 50
OVERVIEW_FIT_ROWS = 20000


@dataclass
class DirectSampleRequest:
    input: Path
    output: Path
    n_clusters: int
    k_per_cluster: Optional[int] = None
    selection: Optional[str] = None
    potential: Optional[Path] = None
    seed: Optional[int] = None
    config: WorkerConfig = field(default_factory=WorkerConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    show_progress: Optional[bool] = None
    plots: bool = True


@dataclass
class DirectSampleResult:
    picks: list[int]  # pool indices, by cluster
    cluster_of_pick: list[int]
    report: dict
    files: dict[str, Path]


def output_files(output: Path, plots: bool) -> dict[str, Path]:
    """The picks and the files written next to them."""
    files = {"structures": output, "report": companion_path(output, "_report.json"),
             "descriptor_basis": companion_path(output, "_descriptor_basis.yaml")}
    if plots:
        files["pca_plot"] = companion_path(output, "_pca.png")
    return files


def _descriptor_basis(request: DirectSampleRequest, elements: set[str], folder: Path) -> tuple[Path, str]:
    """(B-basis YAML, how it was chosen): the given potential's, else an unfitted default basis."""
    options = request.config.direct_sample
    if request.potential is not None:
        return potentials.resolve_b_basis(request.potential, "--potential"), "potential (--potential)"
    if options.potential:
        path = request.config.resolve_path(options.potential)
        return potentials.resolve_b_basis(path, "config direct_sample.potential"), "potential (config)"
    d = options.descriptor
    path = folder / "descriptor_basis.yaml"
    write_unfitted_basis(sorted(elements), d, path)
    return path, (f"unfitted basis (cutoff {d.cutoff} Å, nradmax {d.nradmax_by_orders}, lmax {d.lmax_by_orders}, "
                  f"at most {d.functions_per_element} functions per element)")


def direct_sample(request: DirectSampleRequest) -> DirectSampleResult:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    options = request.config.direct_sample
    n_clusters = int(request.n_clusters)
    if n_clusters <= 0:
        raise InputError(f"--n_clusters {n_clusters}: must be a positive number of clusters")
    k = int(request.k_per_cluster if request.k_per_cluster is not None else options.k_per_cluster)
    if k <= 0:
        raise InputError(f"--k-per-cluster {k}: must be a positive number of structures per cluster")
    selection = request.selection or options.selection
    if selection not in SELECTIONS:
        raise InputError(f"selection '{selection}' is unknown; use one of {', '.join(SELECTIONS)}")
    seed = int(request.seed if request.seed is not None else options.seed)
    output = Path(request.output)
    files = output_files(output, request.plots)
    given_basis = Path(request.potential) if request.potential is not None else (
        request.config.resolve_path(options.potential) if options.potential else None)
    basis_files = [given_basis, given_basis.with_suffix(".yaml")] if given_basis is not None else []
    to_check = {("--output" if key == "structures" else key.replace("_", " ")): p for key, p in files.items()
                # a descriptor basis given back as the potential is not written again (reuse, by design)
                if not (key == "descriptor_basis" and any(same_file(p, b) for b in basis_files))}
    check_outputs(to_check, {"input pool": Path(request.input), "potential": given_basis,
                             "potential's B-basis": basis_files[1] if basis_files else None,
                             "config": request.config.source, "meta_config": request.meta.source})

    path = check_readable_file(request.input, "input")
    elements: set[str] = set()
    offsets = frame_offsets(path, "input", elements)
    # as ASE reads them ("cu" is Cu); a frame with an unknown symbol is skipped as unreadable
    elements = {e.capitalize() for e in elements} & set(chemical_symbols[1:])
    if not offsets:
        raise InputError(f"input '{path}' contains no structures; give an extxyz pool")
    timings["scan_s"] = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="pace-worker-direct-") as tmp:
        basis, basis_source = _descriptor_basis(request, elements, Path(tmp))
        t = time.perf_counter()
        encoded = _encode(request, path, offsets, basis)
        features, usable, n_atoms, skipped, categories = (encoded.features, encoded.usable, encoded.n_atoms,
                                                          encoded.skipped, encoded.categories)
        timings["descriptors_s"] = time.perf_counter() - t
        rows = np.flatnonzero(usable)
        if not len(rows):
            raise InputError(f"input '{path}': none of the {len(offsets)} structures is usable ({skipped.total} "
                             f"broken: {skipped.summary()}; the others have elements outside the descriptor basis "
                             f"{basis}); fix the pool, or give a potential for its elements")
        if len(rows) > 1 and not np.any(np.ptp(features[rows], axis=0) > 0):
            raise InputError(f"input '{path}': all {len(rows)} usable structures have identical descriptors (the "
                             "same structure repeated); there is nothing to diversify: remove the duplicates")
        t = time.perf_counter()
        layout = feature_layout(str(basis))
        selected = select_by_system(features[rows], layout, n_clusters, k, selection, n_atoms[rows], options, seed,
                                    encoded.periodic_dims[rows])
        fitted, labels, pcs = selected.overview, selected.labels, selected.pcs
        timings["clustering_s"] = time.perf_counter() - t
        if n_clusters > len(rows):
            log.warning("asked for %d clusters but the pool has only %d usable structures: picking all of them",
                        n_clusters, len(rows))
        picked = selected.picks
        pick_rows = np.array([r for r, _ in picked], dtype=int)
        picks = [int(rows[r]) for r in pick_rows]
        clusters = [int(c) for _, c in picked]

        rng = np.random.default_rng(seed)
        random_rows = rng.choice(len(rows), size=len(pick_rows), replace=False)
        bins = options.coverage_bins or max(2, min(MAX_COVERAGE_BINS, len(pick_rows)))
        coverage = {"bins": bins, "direct": coverage_score(pcs, pick_rows, bins),
                    "random": coverage_score(pcs, random_rows, bins), "random_seed": seed}

        t = time.perf_counter()
        structures = read_selected(path, picks, offsets)
        picked_atoms = []
        for index, cluster in zip(picks, clusters):
            atoms = structures[index]
            atoms.info["pool_index"] = index
            atoms.info["cluster_id"] = cluster
            picked_atoms.append(atoms)
        group = OutputGroup()  # picks, report, basis and plot are published together, or none
        with group:
            write_extxyz(group.stage(output), picked_atoms, name=output)
            if Path(basis).resolve() != files["descriptor_basis"].resolve():
                shutil.copyfile(basis, group.stage(files["descriptor_basis"]))
            if request.plots:
                from pace_worker.plots import pca_map

                pca_map(group.stage(files["pca_plot"]), pcs, pick_rows, fitted["pca"].explained_variance_ratio_,
                        title=f"{path.name}: {len(picks)} DIRECT picks of {len(rows)} structures",
                        categories=[categories[r] for r in rows])
            timings["write_s"] = time.perf_counter() - t
            report = direct_report(request, path, n_clusters, k, selection, seed, basis_source, features, elements,
                                   offsets, rows, skipped, fitted, labels, picks, clusters, coverage, timings, t0,
                                   files)
            report["systems"] = selected.systems
            write_json(group.stage(files["report"]), report)
            group.publish()
    return DirectSampleResult(picks=picks, cluster_of_pick=clusters, report=report, files=files)


def direct_report(request, path, n_clusters, k, selection, seed, basis_source, features, elements, offsets, rows,
                  skipped, fitted, labels, picks, clusters, coverage, timings, t0, files) -> dict:
    """The JSON report of a direct_sample run."""
    options = request.config.direct_sample
    sizes = np.bincount(labels)
    pca = fitted["pca"]
    birch = fitted["birch"]  # of the largest chemical system
    return {
        "schema": SCHEMA,
        "input": str(path.resolve()),
        "n_clusters_requested": n_clusters,
        "k_per_cluster": k,
        "selection": selection,
        "seed": seed,
        "descriptor": {"basis": basis_source, "n_features": int(features.shape[1]),
                       "elements": sorted(elements)},
        "pool": {"read": len(offsets), "usable": int(len(rows)),
                 "unknown_elements": int(len(offsets) - len(rows) - skipped.total), "skipped": skipped.report()},
        "pca": {"n_components": int(pca.n_components_), "rule": "Kaiser" if options.n_components is None
                else "n_components",
                "explained_variance": [float(v) for v in pca.explained_variance_],
                "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_],
                "explained_variance_ratio_total": float(pca.explained_variance_ratio_.sum())},
        "clusters": {"n": int(len(sizes)), "n_subclusters": int(birch.n_subclusters_),
                     "birch_threshold": float(birch.threshold_), "threshold_lowered": int(birch.refits_),
                     "sizes": [int(s) for s in sizes],
                     "size_min": int(sizes.min()), "size_median": float(np.median(sizes)),
                     "size_max": int(sizes.max())},
        "n_picked": len(picks),
        "picks": [{"pool_index": i, "cluster_id": c} for i, c in zip(picks, clusters)],
        "coverage": coverage,
        "timing": {**timings, "wall_time_s": time.perf_counter() - t0},
        "outputs": {key: str(p.resolve()) for key, p in files.items()},
    }


def _encode(request: DirectSampleRequest, path: Path, offsets: list[int], basis: Path) -> "EncodedPool":
    """The whole pool's feature blocks, filled chunk by chunk."""
    executor = ChunkExecutor.from_meta(request.meta, request.show_progress)
    pool = None
    options = {"min_distance": request.config.pacemaker.data.min_distance,
               "color_by": request.config.direct_sample.color_by}
    chunks = pool_chunks(path, request.meta.chunk_size, "input", offsets=offsets, options=lambda: options)
    for _, block in executor.map_chunks(features_chunk, chunks, initializer=load_basis, initargs=(str(basis),),
                                        description="descriptors", total=len(offsets)):
        pool = pool or EncodedPool.empty(len(offsets), block.features.shape[1])
        pool.fill(block)
    pool.skipped.warn(f"input '{path}'")
    return pool


@dataclass
class EncodedPool:
    """Per structure of the pool: features, whether usable, atoms, periodic directions, category."""

    features: np.ndarray
    usable: np.ndarray
    n_atoms: np.ndarray
    periodic_dims: np.ndarray
    categories: list
    skipped: SkippedStructures

    @classmethod
    def empty(cls, n: int, n_features: int) -> "EncodedPool":
        return cls(np.zeros((n, n_features), dtype=np.float32), np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64),
                   np.zeros(n, dtype=np.int8), [None] * n, SkippedStructures())

    def fill(self, block: FeatureBlock) -> None:
        rows = slice(block.first_index, block.first_index + len(block.features))
        self.features[rows], self.usable[rows], self.n_atoms[rows] = block.features, block.usable, block.n_atoms
        self.periodic_dims[rows], self.categories[rows] = block.periodic_dims, block.categories
        for k, problem in enumerate(block.problems):
            if problem is not None:
                self.skipped.add(block.first_index + k, problem)


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
    clusters shared by :func:`pace_worker.algorithms.direct_clustering.allocate_clusters`; each system's features are
    its elements' columns only. Within a system, each kind of periodicity (bulk, slab, wire,
    cluster) gets at least its proportional share of the system's clusters
    (:func:`select_in_system`)."""
    elements, offsets = layout
    periodic_dims = np.full(len(features), 3, dtype=np.int8) if periodic_dims is None else periodic_dims
    composition = features[:, offsets[-1]:]
    systems, system_of_row = chemical_systems(composition)
    sizes = np.bincount(system_of_row, minlength=len(systems))
    allocation = allocate_clusters(sizes, n_clusters)
    labels = np.full(len(features), -1, dtype=int)
    picks: list[tuple[int, int]] = []
    info = []
    largest_birch = None
    next_id = 0
    for s in np.argsort(-sizes, kind="stable"):
        rows = np.flatnonzero(system_of_row == s)
        names = [el for el, present in zip(elements, systems[s]) if present]
        entry = {"elements": names, "n_structures": int(len(rows)), "n_clusters": int(allocation[s])}
        info.append(entry)
        if allocation[s] == 0:
            entry["n_picked"] = 0
            continue
        columns = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i, present in enumerate(systems[s])
                                  if present] + [offsets[-1] + np.flatnonzero(systems[s])])
        local, local_picks, birch = select_in_system(features[rows][:, columns], int(allocation[s]), k, selection,
                                                     n_atoms[rows], options, seed, periodic_dims[rows], entry)
        largest_birch = largest_birch or birch
        labels[rows] = local + next_id
        picks.extend((int(rows[r]), int(c) + next_id) for r, c in local_picks)
        entry["n_picked"] = len(local_picks)
        next_id += int(local.max()) + 1
    # the whole pool's PCs, for the report, the coverage score and the picture: fitted on at most
    # OVERVIEW_FIT_ROWS evenly spaced rows and applied in blocks (memory stays that of one block)
    overview = Pipeline([("scale", StandardScaler()), ("pca", WeightedPCA(options.n_components,
                                                                           options.weight_components))])
    overview.fit(features[np.linspace(0, len(features) - 1, min(len(features), OVERVIEW_FIT_ROWS)).astype(int)])
    steps = dict(overview.named_steps)
    steps["birch"] = largest_birch or _Trivial(next_id)
    pcs = np.concatenate([steps["pca"].transform_unweighted(steps["scale"].transform(features[i:i + OVERVIEW_FIT_ROWS]))
                          for i in range(0, len(features), OVERVIEW_FIT_ROWS)]).astype(np.float32)
    return Selection(picks=picks, labels=labels, systems=info, overview=steps, pcs=pcs)


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
    if list(natural) == raised:
        return labels, picks, birch
    labels = np.full(len(X), -1, dtype=int)
    picks, next_id, strata, first_birch = [], 0, {}, None
    for kind in np.argsort(-np.asarray(raised), kind="stable"):
        if raised[kind] == 0:
            continue
        rows = np.flatnonzero(kind_of_row == kind)
        local, local_picks, kind_birch, _ = _direct(X[rows], raised[kind], k, selection, n_atoms[rows], options,
                                                    seed)
        first_birch = first_birch or kind_birch
        labels[rows] = local + next_id
        picks.extend((int(rows[r]), int(c) + next_id) for r, c in local_picks)
        next_id += int(local.max()) + 1
        strata[PERIODICITY[int(kinds[kind])]] = {"n_structures": int(len(rows)), "n_clusters": int(raised[kind]),
                                                 "n_clusters_together": int(natural[kind]),
                                                 "n_picked": len(local_picks)}
    entry["strata"] = strata
    return labels, picks, first_birch or birch


@dataclass
class _Trivial:
    """Stands in for BIRCH in the report when no system needed clustering (every row picked)."""

    n_clusters_: int
    n_subclusters_: int = 0
    threshold_: float = 0.0
    refits_: int = 0
