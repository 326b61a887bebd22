"""``sample``: pick the N candidates the current potential is least sure about.

:func:`sample` is the pure core (a :class:`SampleRequest` in, a :class:`SampleResult` out).

Which potential
---------------
``--potential`` > ``sample.potential`` in config.yaml > ``output_potential.yaml`` in the output
folder (``meta_config.output_dir``, else the candidates' folder). γ needs the B-basis ``.yaml``
and its active set: ``--asi`` > ``sample.asi`` > the ``.asi`` beside the ``.yaml``. A ``.yace``
is replaced by the ``.yaml`` beside it, or the command fails (a .yace cannot give γ).

How (two passes over the pool, in chunks on worker processes)
-------------------------------------------------------------
1. Scan a plain pool for where each structure starts (line counts, no parsing), then stream
   it (worker processes read their own byte ranges of the file; a compressed file is
   decompressed here once, in order, and its chunks parsed on the workers); drop exact
   duplicates (same species, positions, cell; the first one counts) and skip structures with
   elements the potential lacks (both counted); compute per-atom γ against the potential's
   active set. Only each structure's max γ is kept for all structures, plus a bounded buffer of
   the ``buffer_size`` most promising ones (``max(20 N, 2000)`` by default): memory does not
   grow with the pool beyond that.
2. Select from the buffer:

   * ``maxvol`` (default): batch D-optimal selection starting from the active set — the better
     (by the log|det| gain of their set of picks) of two runs of greedy rank-1 MaxVol updates, one of which
     first takes the structures that own rows of the joint MaxVol active set (as
     ``pace_select``) (:mod:`pace_worker.algorithms.d_optimal`); exactly N picks when N are usable.
   * ``max_gamma``: the N structures of largest γ.
   * ``gamma_window``: only structures with ``gamma_lo ≤ γ ≤ gamma_hi`` (default 1.5–10), then
     ``maxvol`` among them; those above ``gamma_hi`` are counted as likely unphysical.
   * ``random``: N structures drawn uniformly (reservoir sampling, seeded).

Structures in the output keep all their info/arrays and get ``info['pool_index']``,
``info['gamma_max']`` and per-atom ``arrays['gamma']`` (γ against the potential's active set).
"""
from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, get_args

import numpy as np

from pace_worker.ace import activeset
from pace_worker.ace import potentials
from pace_worker.files.atomic_io import OutputGroup, companion_path, write_json
from pace_worker.config import MetaConfig, SampleStrategy, WorkerConfig
from pace_worker.errors import InputError, check_readable_file
from pace_worker.parallel.executor import ChunkExecutor
from pace_worker.files.output_paths import check_outputs
from pace_worker.files.frames import PoolChunk, frame_offsets, is_compressed, pool_chunks, read_checked
from pace_worker.ace.gamma import load_scorer, projections_chunk, score_structures
from pace_worker.algorithms.d_optimal import (Candidate, greedy_d_optimal, joint_maxvol_order, log_abs_det_of_inverse,
                                   picks_logdet_gain, top_by_gamma)
from pace_worker.files.structures import SkippedStructures, structure_fingerprint, write_extxyz

log = logging.getLogger(__name__)

SCHEMA = "pace-worker/sample_report/1"
STRATEGIES: tuple[str, ...] = get_args(SampleStrategy)


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
class SampleResult:
    picks: list[int]  # pool indices, in pick order
    report: dict
    files: dict[str, Path]


@dataclass(order=True)
class _Kept:
    """A structure kept for selection (orderable: by γ, then earlier pool index first)."""

    key: tuple
    pool_index: int = field(compare=False)
    atoms: object = field(compare=False)
    gamma: np.ndarray = field(compare=False)
    projections: Optional[dict] = field(compare=False, default=None)


# ----------------------------------------------------------------------------- inputs
def find_potential(request: SampleRequest) -> tuple[Path, str, Path]:
    """(potential as given, where it came from, its .asi) by the documented rule; nothing is read."""
    given = request.potential or request.config.sample.potential
    if given:
        path, what = ((Path(given), "--potential") if request.potential else
                      (request.config.resolve_path(given), "config sample.potential"))
    else:
        folder = Path(request.meta.output_dir or Path(request.candidates).resolve().parent)
        path, what = folder / "output_potential.yaml", "the output folder's potential"
        if not path.is_file():
            raise InputError(f"no potential given and no '{path}' found; give --potential (the B-basis .yaml "
                             "written by train) or set sample.potential in config.yaml")
    if request.asi:
        asi = Path(request.asi)
    elif request.config.sample.asi:  # relative to config.yaml, like sample.potential
        asi = request.config.resolve_path(request.config.sample.asi)
    else:
        asi = path.with_suffix(".asi")
    return path, what, asi


def load_potential_and_active_set(path: Path, what: str, asi: Path) -> tuple[Path, Path, activeset.ActiveSet]:
    """(B-basis .yaml, .asi, the active set checked against the potential)."""
    yaml_path = potentials.resolve_b_basis(path, what)
    if not asi.is_file():
        raise InputError(f"active set '{asi}' not found; γ needs the .asi of potential '{yaml_path}' "
                         "(train writes it; or compute it with pace_activeset)")
    return yaml_path, asi, activeset.load_active_set(asi, yaml_path)


@dataclass
class ScoredStructure:
    """What a worker sends back for one pool structure (see :func:`score_chunk`)."""

    pool_index: int
    fingerprint: Optional[str] = None      # None for a structure that could not be used at all
    gamma_max: Optional[float] = None      # None: not scored (unknown elements or a problem)
    atoms: object = None                   # sent back only if it may still enter the buffer
    gamma: Optional[np.ndarray] = None     # per atom
    projections: Optional[dict] = None
    problem: Optional[str] = None          # "<reason>: <detail>" of a structure that was skipped


def score_chunk(chunk: PoolChunk) -> list[ScoredStructure]:
    """Worker: a :class:`ScoredStructure` per structure of the chunk. Unusable structures (a frame
    ASE cannot parse, a geometry pyace must not see) carry their problem; ``gamma_max`` is None
    for them and for structures with elements the potential lacks. Chunk options:
    ``send_back_from`` — structures whose max γ is below it cannot enter the buffer any more, so
    their atoms, per-atom γ and projections are not sent back (None: all are);
    ``with_projections`` — send projections back at all; ``min_distance`` — closer atoms make a
    structure unusable."""
    from pace_worker.ace.gamma import potential_elements

    send_back_from = chunk.options.get("send_back_from")
    with_projections = chunk.options.get("with_projections", False)
    checked = read_checked(chunk, chunk.options.get("min_distance", 0.0))
    known = potential_elements()
    usable = [k for k, (a, _) in enumerate(checked) if a is not None and set(a.get_chemical_symbols()) <= known]
    scores = dict(zip(usable, score_structures([checked[k][0] for k in usable],
                                               send_back_from if with_projections else np.inf)))
    rows = []
    for k, (atoms, problem) in enumerate(checked):
        index = chunk.first_index + k
        if atoms is None:
            rows.append(ScoredStructure(index, problem=problem))
            continue
        fp = structure_fingerprint(atoms)
        if k not in scores:
            rows.append(ScoredStructure(index, fp))
            continue
        gamma, projections = scores[k]
        g = float(gamma.max())
        if send_back_from is not None and g < send_back_from:
            rows.append(ScoredStructure(index, fp, g))
        else:
            rows.append(ScoredStructure(index, fp, g, atoms, gamma, projections))
    return rows


# ----------------------------------------------------------------------------- the command
def sample(request: SampleRequest) -> SampleResult:
    t_start = time.perf_counter()
    opts = request.config.sample
    strategy = request.strategy or opts.strategy
    if strategy not in STRATEGIES:
        raise InputError(f"strategy '{strategy}' is unknown; use one of {', '.join(STRATEGIES)}")
    n = int(request.n_samples)
    if n <= 0:
        raise InputError(f"--n_samples {n}: must be a positive number of structures")
    seed = int(request.seed if request.seed is not None else opts.seed)
    gamma_lo, gamma_hi = opts.gamma_lo, opts.gamma_hi
    gamma_min = opts.gamma_min if strategy != "random" else None  # random is the baseline: no floor
    buffer_size = opts.buffer_size or max(20 * n, 2000)
    potential_path, potential_what, asi_path = find_potential(request)
    output = Path(request.output)
    report_file = companion_path(output, "_report.json")
    check_outputs({"--output": output, "report": report_file},
                  {"candidates pool": Path(request.candidates), "potential": potential_path,
                   "potential's B-basis": potential_path.with_suffix(".yaml"), "active set": asi_path,
                   "config": request.config.source, "meta_config": request.meta.source})
    potential, asi, active_set = load_potential_and_active_set(potential_path, potential_what, asi_path)

    # pass 1: stream, dedupe, score, keep a bounded buffer
    counts = {"read": 0, "duplicates": 0, "unknown_elements": 0, "not_extrapolative": 0, "usable": 0,
              "above_gamma_hi": 0, "outside_window": 0}
    skipped = SkippedStructures()
    seen: set[str] = set()
    gamma_max_all: list[float] = []
    kept: list[_Kept] = []  # a min-heap of the best candidates (or the random reservoir)
    limit = n if strategy in ("max_gamma", "random") else buffer_size
    rng = np.random.default_rng(seed)
    executor = ChunkExecutor.from_meta(request.meta, request.show_progress)

    def send_back_from():
        """Only structures that could still enter the buffer need to come back whole (the buffer's
        lowest γ only grows). Random picks need every structure."""
        if strategy == "random" or len(kept) < limit:
            return None
        return kept[0].key[0]

    with_projections = strategy in ("maxvol", "gamma_window")
    candidates_file = check_readable_file(request.candidates, "candidates")
    # the pool size (progress total, Dask task sizes) from a scan of a plain file; a compressed one
    # would be decompressed twice for it, so it streams without a total
    offsets = None if is_compressed(candidates_file) else frame_offsets(candidates_file, "candidates")
    chunks = pool_chunks(candidates_file, request.meta.chunk_size, "candidates",
                         lambda: {"send_back_from": send_back_from(), "with_projections": with_projections,
                                  "min_distance": request.config.pacemaker.data.min_distance},
                         offsets=offsets)
    for _, results in executor.map_chunks(score_chunk, chunks, initializer=load_scorer,
                                          initargs=(str(potential), str(asi)), description="scoring",
                                          total=None if offsets is None else len(offsets)):
        for row in results:
            index, fp, g, atoms, gamma, projections = (row.pool_index, row.fingerprint, row.gamma_max, row.atoms,
                                                       row.gamma, row.projections)
            counts["read"] += 1
            if row.problem is not None:
                skipped.add(index, row.problem)
                continue
            if fp in seen:
                counts["duplicates"] += 1
                continue
            seen.add(fp)
            if g is None:
                counts["unknown_elements"] += 1
                continue
            gamma_max_all.append(g)
            if gamma_min is not None and g <= gamma_min:
                counts["not_extrapolative"] += 1
                continue
            if strategy == "gamma_window":
                if g > gamma_hi:
                    counts["above_gamma_hi"] += 1
                    continue
                if g < gamma_lo:
                    counts["outside_window"] += 1
                    continue
            counts["usable"] += 1
            if strategy == "random":  # reservoir sampling: a uniform sample of the usable structures
                entry = _Kept((float(rng.random()), -index), index, atoms, gamma)
            else:
                entry = _Kept((g, -index), index, atoms, gamma, projections)
            if len(kept) < limit:
                heapq.heappush(kept, entry)
            elif entry > kept[0]:
                assert atoms is not None, "a structure entered the buffer without being sent back"
                heapq.heapreplace(kept, entry)

    if counts["read"] == 0:
        raise InputError(f"candidates '{request.candidates}' contains no structures")
    skipped.warn(f"candidates '{request.candidates}'")
    nothing_to_learn = counts["usable"] == 0 and counts["not_extrapolative"] > 0
    if nothing_to_learn:
        log.warning("candidates '%s': none of the %d scored structures is extrapolative (γ > gamma_min %g): "
                    "nothing left to learn from this pool; writing an empty %s", request.candidates,
                    len(gamma_max_all), gamma_min, output.name)
    elif counts["usable"] == 0:
        raise InputError(f"candidates '{request.candidates}': none of the {counts['read']} structures is usable "
                         f"({counts['duplicates']} duplicates, {counts['unknown_elements']} with elements the "
                         f"potential lacks, {counts['above_gamma_hi'] + counts['outside_window']} outside the γ "
                         f"window, {skipped.total} broken: {skipped.summary()})")
    if 0 < counts["usable"] < n:
        if counts["not_extrapolative"]:
            log.warning("asked for %d structures but only %d are extrapolative (γ > gamma_min %g; %d are not): "
                        "returning those", n, counts["usable"], gamma_min, counts["not_extrapolative"])
        else:
            log.warning("asked for %d structures but only %d are usable: returning all of them", n, counts["usable"])

    t_scored = time.perf_counter()
    # pass 2: select from the buffer
    buffer = sorted(kept, reverse=True)  # best first; the order only matters for ties
    selection_info: dict = {}
    if not buffer:
        chosen = []
    elif strategy in ("maxvol", "gamma_window"):
        missing = [k for k in buffer if k.projections is None]  # normally none: kept ones come with them
        if missing:
            computed = [p for chunk in executor.map(projections_chunk, [k.atoms for k in missing],
                                                    initializer=load_scorer, initargs=(str(potential), str(asi)),
                                                    description="projections") for p in chunk]
            for k, p in zip(missing, computed):
                k.projections = p
        projections = [k.projections for k in buffer]
        inverse = active_set.inverse
        candidates = [Candidate(k.pool_index, p) for k, p in zip(buffer, projections)]
        # two batch D-optimal heuristics; keep the one whose set of picks grows log|det| of the active
        # set more (scored on the set, by MaxVol swaps from the potential's active set)
        first = joint_maxvol_order(candidates, inverse)[:n]
        options = {"joint MaxVol owners first, then greedy": greedy_d_optimal(candidates, inverse, n, first=first),
                   "greedy": greedy_d_optimal(candidates, inverse, n)}
        set_gain = {m: picks_logdet_gain([candidates[i] for i in r.order], inverse) for m, r in options.items()}
        method = max(options, key=lambda m: sum(set_gain[m].values()))
        result = options[method]
        chosen = [buffer[i] for i in result.order]
        selection_info = {
            "maxvol_method": method,
            "n_from_joint_maxvol": len(first) if method.startswith("joint") else 0,
            "gamma_at_pick": result.gamma_at_pick,
            "entered_active_set": result.volume_gain,
            "active_set_swaps_per_element": result.swaps_per_element,
            "logdet_per_element": {el: _logdet_entry(inverse[el], set_gain[method][el]) for el in sorted(inverse)},
        }
    elif strategy == "max_gamma":
        chosen = [buffer[i] for i in top_by_gamma(np.array([k.key[0] for k in buffer]), n)]
    else:
        chosen = sorted(kept, key=lambda k: k.pool_index)

    picked_atoms = []
    for k in chosen:
        atoms = k.atoms.copy()
        atoms.calc = k.atoms.calc
        atoms.info["pool_index"] = int(k.pool_index)
        atoms.info["gamma_max"] = float(k.gamma.max())
        atoms.arrays["gamma"] = np.asarray(k.gamma, dtype=float)
        picked_atoms.append(atoms)

    g_all = np.asarray(gamma_max_all)
    report = {
        "schema": SCHEMA,
        "strategy": strategy,
        "n_requested": n,
        "n_picked": len(chosen),
        "gamma_min": gamma_min,
        "n_eligible": counts["usable"],
        "nothing_to_learn": nothing_to_learn,
        "seed": seed,
        "potential": str(potential.resolve()),
        "asi": str(Path(asi).resolve()),
        "candidates": str(Path(request.candidates).resolve()),
        "pool": {**counts, "skipped": skipped.report(),
                 "buffer_size": limit if strategy in ("maxvol", "gamma_window") else None,
                 "gamma_window": [gamma_lo, gamma_hi] if strategy == "gamma_window" else None},
        "pool_gamma": {
            "percentiles": {str(p): float(np.percentile(g_all, p)) for p in (50, 90, 99, 100)},
            "count_above": {str(t): int((g_all > t).sum()) for t in (1, 2, 5, 10)},
        },
        "picks": [{"pool_index": int(k.pool_index), "gamma_max": float(k.gamma.max())} for k in chosen],
        **selection_info,
        "wall_time_s": time.perf_counter() - t_start,
        "scoring_s": t_scored - t_start,
        "outputs": {"structures": str(output.resolve()), "report": str(report_file.resolve())},
    }
    with OutputGroup() as group:  # the picks and their report: both or neither
        write_extxyz(group.stage(output), picked_atoms, name=output)
        write_json(group.stage(report_file), report)
        group.publish()
    return SampleResult(picks=[int(k.pool_index) for k in chosen], report=report,
                        files={"structures": output, "report": report_file})


def _logdet_entry(inverse: np.ndarray, gain: float) -> dict:
    """log|det| of the active set before/after the picks (None if the active set is singular)
    and the gain, which Cramer's rule gives exactly in either case."""
    before = log_abs_det_of_inverse(inverse)
    return {"before": before, "after": None if before is None else before + gain, "gain": gain,
            "rank": int(np.linalg.matrix_rank(inverse)), "size": int(inverse.shape[0])}
