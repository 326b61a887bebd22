"""``direct_sample``: a diverse, representative subset of a raw pool (DIRECT sampling).

:func:`direct_sample` is the pure core (a :class:`DirectSampleRequest` in, a
:class:`DirectSampleResult` out). No labels and no potential are needed.

Steps
-----
1. Scan the pool (frame offsets and elements; no parsing of atoms).
2. Encode: per-structure ACE features (:mod:`pace_worker.ace.descriptors`), computed in chunks on
   worker processes that read their own byte ranges of the file; only the structure-level
   feature matrix is kept. Structures with elements the basis lacks are skipped and counted.
3. Chemistry first, then the periodicity floor: one
   :class:`pace_worker.algorithms.direct_strata.StratifiedDirect` fit (the shares of the clusters:
   :mod:`pace_worker.algorithms.direct_allocation`); within each stratum StandardScaler → PCA
   (Kaiser rule or ``n_components``; kept components weighted by their explained-variance ratio)
   → BIRCH into its clusters (threshold lowered until there are enough subclusters)
   (:mod:`pace_worker.algorithms.direct_clustering`).
4. Pick ``k`` per cluster: ``center`` (closest to the true centroid of the members),
   ``random`` (seeded) or ``smallest`` (fewest atoms). ``n_clusters`` ≥ the usable pool picks all.
5. The typed :class:`DirectSampleResult` is built from the fitted estimator; the JSON report is
   derived from it (:func:`direct_result`).

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
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
from ase.data import chemical_symbols

from pace_worker.ace import potentials
from pace_worker.ace.descriptors import FeatureBlock, feature_layout, features_chunk, load_basis, write_unfitted_basis
from pace_worker.algorithms.cluster_picks import SELECTIONS, coverage_score
from pace_worker.config import DirectSampleOptions, MetaConfig, WorkerConfig
from pace_worker.errors import InputError, check_readable_file
from pace_worker.files import discovery
from pace_worker.files.atomic_io import OutputGroup, companion_path, write_json
from pace_worker.files.frames import frame_offsets, pool_chunks, read_selected
from pace_worker.files.output_paths import check_outputs, same_file
from pace_worker.files.structures import SkippedStructures, write_extxyz
from pace_worker.parallel.executor import ChunkExecutor, default_workers
from pace_worker.plots import pca_map
from pace_worker.stack import BackgroundImports

if TYPE_CHECKING:
    from pace_worker.algorithms.direct_strata import ChemicalSystem, StratifiedDirect

log = logging.getLogger(__name__)
# what the clustering and the writing import (the estimator's module imports scikit-learn, ~1 s;
# ASE's io), imported while the workers compute descriptors
CLUSTERING_IMPORTS = ("pace_worker.algorithms.direct_strata", "ase.io")

SCHEMA = "pace-worker/direct_sample_report/1"
MAX_COVERAGE_BINS = 50
# BIRCH's threshold search tries this many thresholds at once at most (one here, the others in
# forked processes): a search takes ~5 fits, and thresholds far below the one kept are the
# slowest and largest fits
BIRCH_SEARCH_PROCESSES = 4


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
class Coverage:
    """The coverage score of the picks and of a seeded random subset of the same size."""

    bins: int
    direct: float
    random: float
    random_seed: int


@dataclass
class DirectSampleResult:
    picks: list[int]  # pool indices, by cluster
    cluster_of_pick: list[int]
    n_read: int
    n_usable: int
    n_unknown_elements: int       # structures with elements outside the descriptor basis
    n_components: int             # kept principal components of the whole pool
    pca_rule: str
    explained_variance: float     # fraction of the variance the kept components explain
    cluster_sizes: list[int]
    cluster_size_median: float
    coverage: Coverage
    wall_time_s: float
    report: dict                  # the JSON report, derived from this result and the run (direct_report)
    files: dict[str, Path]


@dataclass
class _Settings:
    n_clusters: int
    k: int
    selection: str
    seed: int


@dataclass
class _Pool:
    """The scanned pool file: where each structure starts and the elements it names."""

    path: Path
    offsets: Sequence[int]  # frame byte offsets (frame_offsets: 64-bit integers)
    elements: set[str]


@dataclass
class _Run:
    """Everything the result and the report are made of."""

    request: DirectSampleRequest
    settings: _Settings
    pool: _Pool
    basis_source: str
    encoded: "EncodedPool"
    rows: np.ndarray            # pool indices of the usable structures
    direct: StratifiedDirect    # fitted on the usable structures' features
    pick_rows: np.ndarray       # rows of the usable structures picked, by cluster
    picks: list[int]            # their pool indices
    clusters: list[int]
    coverage: Coverage
    timings: dict[str, float]
    files: dict[str, Path]


def output_files(output: Path, plots: bool) -> dict[str, Path]:
    """The picks and the files written next to them."""
    files = {"structures": output, "report": companion_path(output, "_report.json"),
             "descriptor_basis": companion_path(output, "_descriptor_basis.yaml")}
    if plots:
        files["pca_plot"] = companion_path(output, "_pca.png")
    return files


# ----------------------------------------------------------------------------- the command
def direct_sample(request: DirectSampleRequest) -> DirectSampleResult:
    t0 = time.perf_counter()
    settings = settings_of(request)
    files = output_files(Path(request.output), request.plots)
    given = discovery.descriptor_potential_file(request.potential, request.config)
    check_direct_outputs(request, files, given.path)
    pool = scan_pool(request.input)
    timings = {"scan_s": time.perf_counter() - t0}
    with tempfile.TemporaryDirectory(prefix="pace-worker-direct-") as tmp:
        basis, basis_source = descriptor_basis(request, given, pool.elements, Path(tmp))
        t = time.perf_counter()
        encoded = encode(request, pool, basis)
        timings["descriptors_s"] = time.perf_counter() - t
        rows = usable_rows(encoded, pool, basis)
        t = time.perf_counter()
        direct = stratified_direct(settings, request.config.direct_sample, request.meta.workers).fit(
            encoded.features[rows], layout=feature_layout(str(basis)), n_atoms=encoded.n_atoms[rows],
            periodic_dims=encoded.periodic_dims[rows])
        timings["clustering_s"] = time.perf_counter() - t
        if settings.n_clusters > len(rows):
            log.warning("asked for %d clusters but the pool has only %d usable structures: picking all of them",
                        settings.n_clusters, len(rows))
        pick_rows = np.array([r for r, _ in direct.picks_], dtype=int)
        run = _Run(request, settings, pool, basis_source, encoded, rows, direct, pick_rows,
                   picks=[int(rows[r]) for r in pick_rows], clusters=[int(c) for _, c in direct.picks_],
                   coverage=coverage_of(direct.pcs_, pick_rows, settings, request.config.direct_sample.coverage_bins),
                   timings=timings, files=files)
        return write_outputs(run, basis, t0)


def settings_of(request: DirectSampleRequest) -> _Settings:
    """Clusters, picks per cluster, selection rule and seed (flag > config), checked."""
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
    return _Settings(n_clusters, k, selection, int(request.seed if request.seed is not None else options.seed))


def stratified_direct(settings: _Settings, options: DirectSampleOptions,
                      workers: Optional[int] = None) -> StratifiedDirect:
    """The DIRECT estimator of the checked settings and the config's ``direct_sample`` section
    (its module is imported here, or was while the descriptors were computed: :func:`encode`).
    Its BIRCH threshold search uses this machine's CPUs, at most meta_config's ``workers`` and
    ``BIRCH_SEARCH_PROCESSES`` (more processes than CPUs would only slow it down)."""
    from pace_worker.algorithms.direct_clustering import WeightedPCA
    from pace_worker.algorithms.direct_strata import StratifiedDirect

    return StratifiedDirect(n_clusters=settings.n_clusters, k_per_cluster=settings.k, selection=settings.selection,
                            pca=WeightedPCA(options.n_components, options.weight_components),
                            birch_threshold=options.birch_threshold, random_state=settings.seed,
                            n_jobs=min(default_workers(), workers or default_workers(), BIRCH_SEARCH_PROCESSES))


def check_direct_outputs(request: DirectSampleRequest, files: dict[str, Path], given_basis: Optional[Path]) -> None:
    """No output is an input; a descriptor basis given back as the potential is not written again
    (reuse, by design)."""
    basis_files = [given_basis, given_basis.with_suffix(".yaml")] if given_basis is not None else []
    to_check = {("--output" if key == "structures" else key.replace("_", " ")): p for key, p in files.items()
                if not (key == "descriptor_basis" and any(same_file(p, b) for b in basis_files))}
    check_outputs(to_check, {"input pool": Path(request.input), "potential": given_basis,
                             "potential's B-basis": basis_files[1] if basis_files else None,
                             "config": request.config.source, "meta_config": request.meta.source})


def scan_pool(input_path: Path) -> _Pool:
    """Frame offsets and elements of the pool, without parsing atoms."""
    path = check_readable_file(input_path, "input")
    elements: set[str] = set()
    offsets = frame_offsets(path, "input", elements)
    if not offsets:
        raise InputError(f"input '{path}' contains no structures; give an extxyz pool")
    # as ASE reads them ("cu" is Cu); a frame with an unknown symbol is skipped as unreadable
    return _Pool(path, offsets, {e.capitalize() for e in elements} & set(chemical_symbols[1:]))


def descriptor_basis(request: DirectSampleRequest, given: discovery.Found, elements: set[str],
                     folder: Path) -> tuple[Path, str]:
    """(B-basis YAML, how it was chosen): the given potential's, else an unfitted default basis."""
    if given.path is not None:
        source = "potential (--potential)" if given.source == "--potential" else "potential (config)"
        return potentials.resolve_b_basis(given.path, given.source), source
    d = request.config.direct_sample.descriptor
    path = folder / "descriptor_basis.yaml"
    write_unfitted_basis(sorted(elements), d, path)
    return path, (f"unfitted basis (cutoff {d.cutoff} Å, nradmax {d.nradmax_by_orders}, lmax {d.lmax_by_orders}, "
                  f"at most {d.functions_per_element} functions per element)")


def usable_rows(encoded: "EncodedPool", pool: _Pool, basis: Path) -> np.ndarray:
    """Pool indices of the usable structures; an error if none is, or all look the same."""
    rows = np.flatnonzero(encoded.usable)
    skipped = encoded.skipped
    if not len(rows):
        raise InputError(f"input '{pool.path}': none of the {len(pool.offsets)} structures is usable ({skipped.total} "
                         f"broken: {skipped.summary()}; the others have elements outside the descriptor basis "
                         f"{basis}); fix the pool, or give a potential for its elements")
    if len(rows) > 1 and not np.any(np.ptp(encoded.features[rows], axis=0) > 0):
        raise InputError(f"input '{pool.path}': all {len(rows)} usable structures have identical descriptors (the "
                         "same structure repeated); there is nothing to diversify: remove the duplicates")
    return rows


def coverage_of(pcs: np.ndarray, pick_rows: np.ndarray, settings: _Settings, bins: Optional[int]) -> Coverage:
    """Coverage of the picks and of a seeded random subset of the same size (module docstring)."""
    random_rows = np.random.default_rng(settings.seed).choice(len(pcs), size=len(pick_rows), replace=False)
    bins = bins or max(2, min(MAX_COVERAGE_BINS, len(pick_rows)))
    return Coverage(bins, coverage_score(pcs, pick_rows, bins), coverage_score(pcs, random_rows, bins), settings.seed)


def write_outputs(run: _Run, basis: Path, t0: float) -> DirectSampleResult:
    """Picks, descriptor basis, PCA picture and report, published together or none; the result."""
    t = time.perf_counter()
    structures = read_selected(run.pool.path, run.picks, run.pool.offsets)
    picked_atoms = []
    for index, cluster in zip(run.picks, run.clusters):
        atoms = structures[index]
        atoms.info["pool_index"] = index
        atoms.info["cluster_id"] = cluster
        picked_atoms.append(atoms)
    files = run.files
    with OutputGroup() as group:
        write_extxyz(group.stage(files["structures"]), picked_atoms, name=files["structures"])
        if Path(basis).resolve() != files["descriptor_basis"].resolve():
            shutil.copyfile(basis, group.stage(files["descriptor_basis"]))
        if run.request.plots:
            pca_map(group.stage(files["pca_plot"]), run.direct.pcs_, run.pick_rows,
                    run.direct.overview_["pca"].explained_variance_ratio_,
                    title=f"{run.pool.path.name}: {len(run.picks)} DIRECT picks of {len(run.rows)} structures",
                    categories=[run.encoded.categories[r] for r in run.rows])
        run.timings["write_s"] = time.perf_counter() - t
        result = direct_result(run, time.perf_counter() - t0)
        write_json(group.stage(files["report"]), result.report)
        group.publish()
    return result


def direct_result(run: _Run, wall_time_s: float) -> DirectSampleResult:
    """The typed result of a run, then its JSON report derived from it (:func:`direct_report`)."""
    labels = run.direct.labels_
    sizes = np.bincount(labels[labels >= 0])  # -1: a system given no cluster
    pca = run.direct.overview_["pca"]
    result = DirectSampleResult(
        picks=run.picks, cluster_of_pick=run.clusters, n_read=len(run.pool.offsets), n_usable=int(len(run.rows)),
        n_unknown_elements=int(len(run.pool.offsets) - len(run.rows) - run.encoded.skipped.total),
        n_components=int(pca.n_components_), pca_rule="Kaiser" if pca.n_components is None else "n_components",
        explained_variance=float(pca.explained_variance_ratio_.sum()),
        cluster_sizes=[int(s) for s in sizes], cluster_size_median=float(np.median(sizes)),
        coverage=run.coverage, wall_time_s=wall_time_s, report={}, files=run.files)
    result.report = direct_report(run, result)
    return result


def direct_report(run: _Run, result: DirectSampleResult) -> dict:
    """The JSON report of a direct_sample run (schema :data:`SCHEMA`)."""
    pca = run.direct.overview_["pca"]
    sizes = result.cluster_sizes
    return {
        "schema": SCHEMA,
        "input": str(run.pool.path.resolve()),
        "n_clusters_requested": run.settings.n_clusters,
        "k_per_cluster": run.settings.k,
        "selection": run.settings.selection,
        "seed": run.settings.seed,
        "descriptor": {"basis": run.basis_source, "n_features": int(run.encoded.features.shape[1]),
                       "elements": sorted(run.pool.elements)},
        "pool": {"read": result.n_read, "usable": result.n_usable, "unknown_elements": result.n_unknown_elements,
                 "skipped": run.encoded.skipped.report()},
        "pca": {"n_components": result.n_components, "rule": result.pca_rule,
                "explained_variance": [float(v) for v in pca.explained_variance_],
                "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_],
                "explained_variance_ratio_total": result.explained_variance},
        "clusters": {"n": len(sizes), "n_subclusters": run.direct.n_subclusters_,  # BIRCH of the largest system
                     "birch_threshold": run.direct.birch_threshold_, "threshold_lowered": run.direct.threshold_lowered_,
                     "sizes": sizes, "size_min": min(sizes), "size_median": result.cluster_size_median,
                     "size_max": max(sizes)},
        "n_picked": len(result.picks),
        "picks": [{"pool_index": i, "cluster_id": c} for i, c in zip(result.picks, result.cluster_of_pick)],
        "coverage": {"bins": result.coverage.bins, "direct": result.coverage.direct,
                     "random": result.coverage.random, "random_seed": result.coverage.random_seed},
        "timing": {**run.timings, "wall_time_s": result.wall_time_s},
        "outputs": {key: str(p.resolve()) for key, p in result.files.items()},
        "systems": [system_report(system) for system in run.direct.systems_],
    }


def system_report(system: ChemicalSystem) -> dict:
    """A chemical system's entry in the report: ``n_components`` when BIRCH clustered its rows,
    ``strata`` when its kinds of periodicity were clustered apart."""
    entry = {"elements": system.elements, "n_structures": system.n_structures, "n_groups": system.n_groups,
             "n_clusters": system.n_clusters}
    if system.n_components is not None:
        entry["n_components"] = system.n_components
    if system.strata:
        entry["strata"] = {s.periodicity: {"n_structures": s.n_structures, "n_clusters": s.n_clusters,
                                           "n_clusters_together": s.n_clusters_together, "n_picked": s.n_picked}
                           for s in system.strata}
    entry["n_picked"] = system.n_picked
    return entry


# ----------------------------------------------------------------------------- encoding
def encode(request: DirectSampleRequest, pool: _Pool, basis: Path) -> "EncodedPool":
    """The whole pool's feature blocks, filled chunk by chunk on the workers."""
    executor = ChunkExecutor.from_meta(request.meta, request.show_progress)
    encoded = None
    options = {"min_distance": request.config.pacemaker.data.min_distance,
               "color_by": request.config.direct_sample.color_by}
    chunks = pool_chunks(pool.path, request.meta.chunk_size, "input", offsets=pool.offsets, options=lambda: options)
    results = executor.map_chunks(features_chunk, chunks, initializer=load_basis, initargs=(str(basis),),
                                  description="descriptors", total=len(pool.offsets))
    elsewhere = executor.runs_elsewhere(len(pool.offsets))
    for _, block in BackgroundImports(*CLUSTERING_IMPORTS).during(results, elsewhere):
        encoded = encoded or EncodedPool.empty(len(pool.offsets), block.features.shape[1])
        encoded.fill(block)
    encoded.skipped.warn(f"input '{pool.path}'")
    return encoded


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
