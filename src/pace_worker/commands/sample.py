"""``sample``: pick the N candidates the current potential is least sure about.

:func:`sample` is the pure core (a :class:`SampleRequest` in, a :class:`SampleResult` out).

Which potential
---------------
``--potential`` > ``sample.potential`` in config.yaml > ``output_potential.yaml`` in the output
folder (``meta_config.output_dir``, else the candidates' folder). γ needs the B-basis ``.yaml``
and its active set: ``--asi`` > ``sample.asi`` > the ``.asi`` beside the ``.yaml``. A ``.yace``
is replaced by the ``.yaml`` beside it, or the command fails (a .yace cannot give γ). The rule
lives in :mod:`pace_worker.files.discovery`.

How (two passes over the pool, in chunks on worker processes)
-------------------------------------------------------------
1. Scan a plain pool for where each structure starts (line counts, no parsing), then stream
   it (worker processes read their own byte ranges of the file; a compressed file is
   decompressed here once, in order, and its chunks parsed on the workers); drop exact
   duplicates (same species, positions, cell; the first one counts) and skip structures with
   elements the potential lacks (both counted); compute per-atom γ against the potential's
   active set (:mod:`pace_worker.ace.gamma`). Only each structure's max γ is kept for all
   structures, plus the strategy's bounded buffer of the most promising ones (``max(20 N, 2000)``
   by default for MaxVol): memory does not grow with the pool beyond that.
2. Select from the buffer. Each strategy is one class in
   :mod:`pace_worker.algorithms.sample_strategies` (what it admits, how much it buffers, how it
   selects):

   * ``maxvol`` (default): batch D-optimal selection starting from the active set — the better
     (by the log|det| gain of their set of picks) of two runs of greedy rank-1 MaxVol updates,
     one of which first takes the structures that own rows of the joint MaxVol active set (as
     ``pace_select``) (:mod:`pace_worker.algorithms.d_optimal`); exactly N picks when N are
     eligible.
   * ``max_gamma``: the N structures of largest γ.
   * ``gamma_window``: only structures with ``gamma_lo ≤ γ ≤ gamma_hi`` (default 1.5–10), then
     ``maxvol`` among them; those above ``gamma_hi`` are counted as likely unphysical.
   * ``random``: N structures drawn uniformly (reservoir sampling, seeded).

Structures in the output keep all their info/arrays and get ``info['pool_index']``,
``info['gamma_max']`` and per-atom ``arrays['gamma']`` (γ against the potential's active set).
"""
from __future__ import annotations

import functools
import logging
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from pace_worker.ace.activeset import GammaPotential, load_gamma_potential, maxvol_routine
from pace_worker.ace.gamma import ScoredStructure, load_scorer, projections_chunk, score_chunk
from pace_worker.algorithms.sample_strategies import (
    STRATEGIES,
    BufferedCandidate,
    CandidateBuffer,
    LogDetChange,
    SampleStrategy,
    Selected,
    make_strategy,
)
from pace_worker.config import MetaConfig, WorkerConfig
from pace_worker.errors import InputError, check_readable_file
from pace_worker.files import discovery
from pace_worker.files.atomic_io import OutputGroup, companion_path, write_json
from pace_worker.files.compression import is_compressed
from pace_worker.files.frames import frame_offsets, parse_frame_texts, pool_chunks
from pace_worker.files.output_paths import check_outputs
from pace_worker.files.structures import SkippedStructures, write_extxyz
from pace_worker.parallel.executor import ChunkExecutor, default_workers
from pace_worker.stack import BackgroundImports

log = logging.getLogger(__name__)

SCHEMA = "pace-worker/sample_report/1"
# what the selection and the writing import (pyace's MaxVol, SciPy's BLAS, ASE's io: ~0.6 s),
# imported while the workers score the pool
SELECTION_IMPORTS = ("pyace.maxvol", "scipy.linalg.blas", "ase.io")


@dataclass
class SampleRequest:
    candidates: Path
    n_samples: int
    output: Path
    potential: Optional[Path] = None
    asi: Optional[Path] = None
    strategy: Optional[str] = None
    seed: Optional[int] = None
    config: WorkerConfig = field(default_factory=WorkerConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    show_progress: Optional[bool] = None


@dataclass
class PoolCounts:
    """How the pool's structures were counted (``pool`` in the report; ``skipped`` beside it)."""

    read: int = 0
    duplicates: int = 0
    unknown_elements: int = 0
    not_extrapolative: int = 0  # γ ≤ gamma_min
    usable: int = 0             # eligible for selection
    above_gamma_hi: int = 0
    outside_window: int = 0


@dataclass
class PoolGamma:
    """The distribution of max γ over the scored structures."""

    percentiles: dict[str, float]   # "50", "90", "99", "100"
    count_above: dict[str, int]     # "1", "2", "5", "10"

    @classmethod
    def of(cls, gamma_max: list[float]) -> "PoolGamma":
        g = np.asarray(gamma_max)
        return cls({str(p): float(np.percentile(g, p)) for p in (50, 90, 99, 100)},
                   {str(t): int((g > t).sum()) for t in (1, 2, 5, 10)})


@dataclass
class SampleResult:
    picks: list[int]                # pool indices, in pick order
    picks_gamma_max: list[float]    # their max γ
    strategy: str
    n_requested: int
    gamma_min: Optional[float]
    seed: int
    counts: PoolCounts
    skipped: SkippedStructures      # broken structures of the pool, by reason
    strategy_settings: dict         # the strategy's buffer size and γ window, as the report shows them
    pool_gamma: PoolGamma
    nothing_to_learn: bool          # no structure above gamma_min: the output is empty
    selection: dict                 # the strategy's own report fields (how it selected)
    logdet_per_element: dict[str, LogDetChange]  # MaxVol strategies; empty for the others
    potential: Path                 # the B-basis .yaml and active set γ is computed with
    asi: Path
    candidates: Path
    wall_time_s: float
    scoring_s: float                # of it, pass 1
    files: dict[str, Path]

    @functools.cached_property
    def report(self) -> dict:
        """The JSON report (schema :data:`SCHEMA`), made once."""
        return {
            "schema": SCHEMA,
            "strategy": self.strategy,
            "n_requested": self.n_requested,
            "n_picked": len(self.picks),
            "gamma_min": self.gamma_min,
            "n_eligible": self.counts.usable,
            "nothing_to_learn": self.nothing_to_learn,
            "seed": self.seed,
            "potential": str(self.potential.resolve()),
            "asi": str(self.asi.resolve()),
            "candidates": str(self.candidates.resolve()),
            "pool": {**asdict(self.counts), "skipped": self.skipped.report(), **self.strategy_settings},
            "pool_gamma": asdict(self.pool_gamma),
            "picks": [{"pool_index": i, "gamma_max": g} for i, g in zip(self.picks, self.picks_gamma_max)],
            **self.selection,
            "wall_time_s": self.wall_time_s,
            "scoring_s": self.scoring_s,
            "outputs": {k: str(p.resolve()) for k, p in self.files.items()},
        }


@dataclass
class _ScoredPool:
    """Pass 1's outcome: the strategy's buffer, the counts and every scored structure's max γ."""

    buffer: CandidateBuffer
    counts: PoolCounts = field(default_factory=PoolCounts)
    skipped: SkippedStructures = field(default_factory=SkippedStructures)
    gamma_max: array = field(default_factory=lambda: array("d"))  # 8 bytes a structure
    seen: set = field(default_factory=set)  # fingerprint.structure_key of each structure (16 bytes)

    def take(self, row: ScoredStructure, strategy: SampleStrategy) -> None:
        """Count one structure and offer it to the buffer if the strategy admits it."""
        self.counts.read += 1
        if row.problem is not None:
            self.skipped.add(row.pool_index, row.problem)
            return
        if row.fingerprint in self.seen:
            self.counts.duplicates += 1
            return
        self.seen.add(row.fingerprint)
        if row.gamma_max is None:
            self.counts.unknown_elements += 1
            return
        self.gamma_max.append(row.gamma_max)
        refused = strategy.admit(row.gamma_max)
        if refused is not None:
            setattr(self.counts, refused, getattr(self.counts, refused) + 1)
            return
        self.counts.usable += 1
        self.buffer.offer(BufferedCandidate(strategy.key(row.gamma_max, row.pool_index), row.pool_index, row.frame,
                                            row.gamma, row.projections))


# ----------------------------------------------------------------------------- the command
def sample(request: SampleRequest) -> SampleResult:
    t_start = time.perf_counter()
    strategy = strategy_of(request)
    check_readable_file(request.candidates, "candidates", "check the path given to --candidates")
    potential_file, asi_file = discovery.sample_potential_files(request.potential, request.asi, request.config,
                                                                request.meta.output_dir, request.candidates)
    output = Path(request.output)
    files = {"structures": output, "report": companion_path(output, "_report.json")}
    check_outputs({"--output": output, "report": files["report"]},
                  {"candidates pool": Path(request.candidates), "potential": potential_file.path,
                   "potential's B-basis": potential_file.path.with_suffix(".yaml"), "active set": asi_file.path,
                   "config": request.config.source, "meta_config": request.meta.source})
    potential = load_gamma_potential(potential_file, asi_file)
    executor = ChunkExecutor.from_meta(request.meta, request.show_progress)

    scored = score_pool(request, strategy, potential, executor)  # pass 1
    nothing_to_learn = check_eligible(request, scored, strategy)
    t_scored = time.perf_counter()
    buffered = scored.buffer.best_first()  # pass 2
    if buffered and strategy.needs_projections:
        fill_projections(buffered, potential, executor)
    selected = strategy.select(buffered, potential.active_set.inverse) if buffered else Selected([])

    result = SampleResult(
        picks=[int(c.pool_index) for c in selected.picks], picks_gamma_max=[c.gamma_max for c in selected.picks],
        strategy=strategy.name, n_requested=strategy.n, gamma_min=strategy.gamma_min, seed=strategy.seed,
        counts=scored.counts, skipped=scored.skipped, strategy_settings=strategy.report_fields(),
        pool_gamma=PoolGamma.of(scored.gamma_max), nothing_to_learn=nothing_to_learn, selection=selected.report,
        logdet_per_element=selected.logdet, potential=Path(potential.yaml), asi=Path(potential.asi),
        candidates=Path(request.candidates), wall_time_s=time.perf_counter() - t_start,
        scoring_s=t_scored - t_start, files=files)
    with OutputGroup() as group:  # the picks and their report: both or neither
        write_extxyz(group.stage(output), picked_structures(selected.picks), name=output)
        write_json(group.stage(files["report"]), result.report)
        group.publish()
    return result


def strategy_of(request: SampleRequest) -> SampleStrategy:
    """The request's strategy object (flag > config), with N and the seed checked."""
    opts = request.config.sample
    name = request.strategy or opts.strategy
    if name not in STRATEGIES:
        raise InputError(f"strategy '{name}' is unknown; use one of {', '.join(STRATEGIES)}")
    n = int(request.n_samples)
    if n <= 0:
        raise InputError(f"--n_samples {n}: must be a positive number of structures")
    return make_strategy(name, n, opts, int(request.seed if request.seed is not None else opts.seed), maxvol_routine(),
                         n_jobs=min(default_workers(), request.meta.workers or default_workers()))


def score_pool(request: SampleRequest, strategy: SampleStrategy, potential: GammaPotential,
               executor: ChunkExecutor) -> _ScoredPool:
    """Pass 1: stream the pool through the workers, dedupe, count, and fill the strategy's buffer."""
    scored = _ScoredPool(CandidateBuffer(strategy.buffer_limit()))
    candidates_file = check_readable_file(request.candidates, "candidates")
    # the pool size (progress total, Dask task sizes) from a scan of a plain file; a compressed one
    # would be decompressed twice for it, so it streams without a total
    offsets = None if is_compressed(candidates_file) else frame_offsets(candidates_file, "candidates")
    min_distance = request.config.pacemaker.data.min_distance
    chunks = pool_chunks(candidates_file, request.meta.chunk_size, "candidates",
                         lambda: {"send_back_from": strategy.send_back_from(scored.buffer),
                                  "with_projections": strategy.needs_projections, "min_distance": min_distance},
                         offsets=offsets)
    total = None if offsets is None else len(offsets)
    results = executor.map_chunks(score_chunk, chunks, initializer=load_scorer,
                                  initargs=(str(potential.yaml), str(potential.asi)), description="scoring",
                                  total=total)
    for _, rows in BackgroundImports(*SELECTION_IMPORTS).during(results, executor.runs_elsewhere(total)):
        for row in rows:
            scored.take(row, strategy)
    return scored


def check_eligible(request: SampleRequest, scored: _ScoredPool, strategy: SampleStrategy) -> bool:
    """Whether nothing is left to learn (no structure above the γ floor); an error when no
    structure is usable for another reason; a warning when fewer than N are eligible."""
    counts, where, n = scored.counts, request.candidates, strategy.n
    if counts.read == 0:
        raise InputError(f"candidates '{where}' contains no structures")
    scored.skipped.warn(f"candidates '{where}'")
    nothing_to_learn = counts.usable == 0 and counts.not_extrapolative > 0
    if nothing_to_learn:
        log.warning("candidates '%s': none of the %d scored structures is extrapolative (γ > gamma_min %g): "
                    "nothing left to learn from this pool; writing an empty %s", where, len(scored.gamma_max),
                    strategy.gamma_min, Path(request.output).name)
    elif counts.usable == 0:
        raise InputError(f"candidates '{where}': none of the {counts.read} structures is usable "
                         f"({counts.duplicates} duplicates, {counts.unknown_elements} with elements the "
                         f"potential lacks, {counts.above_gamma_hi + counts.outside_window} outside the γ "
                         f"window, {scored.skipped.total} broken: {scored.skipped.summary()})")
    if 0 < counts.usable < n:
        if counts.not_extrapolative:
            log.warning("asked for %d structures but only %d are extrapolative (γ > gamma_min %g; %d are not): "
                        "returning those", n, counts.usable, strategy.gamma_min, counts.not_extrapolative)
        else:
            log.warning("asked for %d structures but only %d are usable: returning all of them", n, counts.usable)
    return nothing_to_learn


def fill_projections(buffered: list[BufferedCandidate], potential: GammaPotential,
                     executor: ChunkExecutor) -> None:
    """Projections of buffered candidates that came back without them (normally none do)."""
    missing = [c for c in buffered if c.projections is None]
    if not missing:
        return
    computed = [p for chunk in executor.map(projections_chunk, parse_frame_texts([c.frame for c in missing]),
                                            initializer=load_scorer,
                                            initargs=(str(potential.yaml), str(potential.asi)),
                                            description="projections") for p in chunk]
    for c, p in zip(missing, computed):
        c.projections = p


def picked_structures(picks: list[BufferedCandidate]) -> list:
    """The picks as written: all their info/arrays (their frames parsed again, as the workers parsed
    them: :func:`pace_worker.files.frames.parse_frame_texts`), plus ``pool_index``, ``gamma_max`` and
    per-atom ``gamma``."""
    structures = parse_frame_texts([c.frame for c in picks]) if picks else []
    for c, atoms in zip(picks, structures):
        atoms.info["pool_index"] = int(c.pool_index)
        atoms.info["gamma_max"] = c.gamma_max
        atoms.arrays["gamma"] = np.asarray(c.gamma, dtype=float)
    return structures
