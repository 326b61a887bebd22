"""``demo``: a complete active-learning loop with ASE's EMT calculator standing in for DFT.

:func:`active_learning_demo` is the pure core; every step calls the same public functions a user's
pipeline would (``direct_sample``, ``train``, ``sample``, ``validate``), on files in ``workdir``.

The loop (per selection strategy; the first two steps are shared, so strategies start equal)
-------------------------------------------------------------------------------------------
1. Raw pool: ``pool_size`` unlabelled Cu structures — fcc cells (strained ±4 %, rattled),
   vacancies, bcc/hcp cells, fcc(111) slabs (periodic, 8 Å vacuum); ``direct_sample`` picks
   ``initial_labels`` of them; EMT labels them.
2. ``train`` iteration 1 on them.
3. Explore: Langevin MD with the current potential (pyace ``PyACECalculator`` with its active
   set, so γ is known at every step) from ``md_starts`` training structures at each of the
   increasing temperatures :data:`TEMPERATURES` (as DP-GEN explores several temperatures per
   iteration); a trajectory stops at the first snapshot with γ above ``gamma_stop`` (kept: the
   most informative one) or with atoms closer than 1.5 Å (collapsed, unphysical: dropped). The
   snapshots form the candidate pool.
4. ``sample`` ``labels_per_iteration`` candidates with the strategy; EMT labels them; ``train``
   the next iteration warm-started from the previous potential on all labels so far.
5. ``validate`` every iteration on a fixed held-out test set: EMT MD snapshots from 300 K to
   1500 K of the same structure families, and unseen raw pool structures.

What it measures
----------------
The loop runs once per seed (each seed: its own pool, test set, MD and random choices); a
strategy's loop stops once its test force RMSE is at or below ``target_force_rmse`` or its label
budget (``iterations`` potentials) is spent. :func:`labels_to_target` reads off the labels each
strategy needed per seed, and :func:`label_ratios` the ratio of the first strategy's labels to
each other's — the number ``bench/al_efficiency.py`` reports too, from this same function with
finer steps and more strategies. One seed's pick can decide one loop; the table over seeds is
what the demo reports.

Outputs in ``workdir``: ``config.yaml`` (the science settings used, shared by all seeds), per
seed ``seed_<n>/`` (``raw_pool.xyz``, ``test_set.xyz``, one folder per strategy with labels,
candidate pools, picks, the potentials of each iteration, validation JSONs),
``learning_curve.png`` and ``demo_summary.json`` (every iteration, labels to target, ratios).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.emt import EMT

from pace_worker.ace.predictions import make_calculator
from pace_worker.commands.direct_sample import DirectSampleRequest, direct_sample
from pace_worker.commands.sample import SampleRequest, sample
from pace_worker.commands.train import TrainRequest, train
from pace_worker.commands.validate import ValidateRequest, validate
from pace_worker.config import MetaConfig, WorkerConfig, load_worker_config
from pace_worker.files.atomic_io import write_json_atomic
from pace_worker.files.structures import closest_pair_below, fully_periodic_or_not, write_extxyz_atomic
from pace_worker.plots import learning_curve
from pace_worker.toy_data import label_with_emt, unlabelled_pool

log = logging.getLogger(__name__)

SCHEMA = "pace-worker/demo_summary/2"
TEMPERATURES = (300.0, 800.0, 1400.0)  # K; every exploration runs MD at each, from each start

DEMO_CONFIG = """\
# science settings of the demo (pacemaker via pace-worker); edit and rerun to experiment
cutoff: 5.0
data: {test_size: 0}
potential:
  functions:
    number_of_functions_per_element: 24
    ALL: {nradmax_by_orders: [8, 3, 2], lmax_by_orders: [0, 3, 2]}
fit: {maxiter: 80}
backend: {batch_size: 100, display_step: 20}
direct_sample:
  descriptor: {cutoff: 5.0}
"""


@dataclass
class DemoRequest:
    workdir: Path
    iterations: int = 5  # potentials per strategy and seed at most: the label budget
    strategies: Sequence[str] = ("maxvol",)
    seeds: Sequence[int] = (0, 1, 2)
    pool_size: int = 300
    initial_labels: int = 12
    labels_per_iteration: int = 8
    md_steps: int = 200
    md_starts: int = 4
    snapshot_every: int = 10
    gamma_stop: float = 10.0
    test_structures: int = 60
    workers: Optional[int] = None
    show_progress: Optional[bool] = None
    # a strategy's loop stops once its test force RMSE is at or below this (meV/Å); None: never
    target_force_rmse: Optional[float] = 50.0

    @property
    def label_budget(self) -> int:
        return self.initial_labels + (self.iterations - 1) * self.labels_per_iteration


MIN_DISTANCE = 1.5  # Å: closer Cu atoms mean a collapsed (unphysical) MD snapshot
BROKEN_FORCE_ERROR = 1000.0  # meV/Å: a test structure whose worst force error exceeds this is "broken"


@dataclass
class IterationRow:
    seed: int
    strategy: str
    iteration: int
    labels: int
    energy_rmse_mev_per_atom: float
    force_rmse_mev_per_A: float
    broken_test_structures: int  # worst force error > BROKEN_FORCE_ERROR (a hole in the potential)
    exploration_gamma_max: Optional[float]  # max γ seen when exploring with this iteration's potential
    candidates: Optional[int]
    wall_time_s: float


@dataclass
class LabelsToTarget:
    """How many labels one strategy needed at one seed to reach the target test force RMSE."""

    seed: int
    strategy: str
    labels: int  # labels of the first potential at or below the target; else of the last one
    reached: bool  # False: the target was not reached within the budget (more than ``labels`` needed)
    force_rmse_mev_per_A: float  # of that potential


@dataclass
class LabelRatio:
    """``strategy``'s labels to target over ``reference``'s at one seed. ``bound``: ``"="`` both
    reached; ``"<"`` only ``strategy`` reached (the ratio is an upper bound); ``">"`` only
    ``reference`` reached (a lower bound); ``"?"`` neither (ratio None)."""

    seed: int
    strategy: str
    reference: str
    ratio: Optional[float]
    bound: str


@dataclass
class DemoResult:
    rows: list[IterationRow]
    target_force_rmse: Optional[float] = None
    labels_to_target: list[LabelsToTarget] = field(default_factory=list)
    ratios: list[LabelRatio] = field(default_factory=list)
    wall_time_s: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)


# ----------------------------------------------------------------------------- structures
def raw_pool(n: int, seed: int) -> list[Atoms]:
    """Unlabelled Cu structures of several families; slabs are made fully periodic here with 4 Å
    of vacuum (periodic slabs, as plane-wave DFT codes compute them)."""
    families = ("fcc", "vacancy", "fcc", "bcc", "hcp", "slab")
    pool = unlabelled_pool(n, families=families, seed=seed, element="Cu", strain=0.04, rattle=0.08)
    return [fully_periodic_or_not(a, 4.0) for a in pool]


@dataclass(frozen=True)
class MDRun:
    """Langevin MD of ``steps`` steps of 2 fs with a snapshot every ``every`` steps; with
    ``gamma_stop``, a trajectory stops at the first snapshot with γ above it."""

    steps: int
    every: int
    gamma_stop: Optional[float] = None


def emt_md_snapshots(starts: Sequence[Atoms], temperatures: Sequence[float], md: MDRun, seed: int) -> list[Atoms]:
    """EMT-labelled Langevin MD snapshots (the held-out test set)."""

    frames = []
    for k, (atoms, temperature) in enumerate(zip(starts, temperatures)):
        traj, _ = langevin(atoms, EMT(), temperature, md, seed + k)
        frames.extend(traj)
    return label_with_emt(frames)


def langevin(atoms: Atoms, calculator, temperature: float, md: MDRun, seed: int) -> tuple[list[Atoms], float]:
    """Snapshots of ``md`` from ``atoms``, and the max γ seen (0 without γ). Stops at the first
    snapshot with γ above ``md.gamma_stop`` — that extrapolative snapshot is kept (the most
    informative one, as pacemaker's active learning collects it from LAMMPS), nothing after it —
    or at the first snapshot with two atoms closer than :data:`MIN_DISTANCE`, which is dropped
    (the trajectory has collapsed: unphysical, not worth a DFT call)."""
    from ase.md.langevin import Langevin

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02, rng=rng, fixcm=False)
    snapshots, gamma_max = [], 0.0
    for step in range(0, md.steps, md.every):
        dyn.run(md.every)
        gamma = calculator.results.get("gamma")
        g = float(np.max(gamma)) if gamma is not None else 0.0
        gamma_max = max(gamma_max, g)
        if closest_pair_below(atoms, MIN_DISTANCE) is not None:
            break
        snap = atoms.copy()
        snap.calc = None
        snap.info.update({"config_type": f"md_{int(temperature)}K", "md_step": step + md.every})
        snapshots.append(snap)
        if md.gamma_stop is not None and g > md.gamma_stop:
            break
    return snapshots, gamma_max


def explore(potential_yaml: Path, asi: Path, starts: Sequence[Atoms], temperatures: Sequence[float], md: MDRun,
            seed: int) -> tuple[list[Atoms], float]:
    """MD with the potential from each start at each temperature: the candidate pool and max γ."""
    calc = make_calculator(str(potential_yaml), str(asi))
    candidates, gamma_max = [], 0.0
    for t_index, temperature in enumerate(temperatures):
        for k, atoms in enumerate(starts):
            frames, g = langevin(atoms, calc, temperature, md, seed + 100 * t_index + k)
            candidates.extend(frames)
            gamma_max = max(gamma_max, g)
    return candidates, gamma_max


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainedPotential:
    """The files ``train`` published for one iteration, and how many labels it was trained on."""

    folder: Path
    n_labels: int

    @property
    def yaml(self) -> Path:
        return self.folder / "output_potential.yaml"

    @property
    def asi(self) -> Path:
        return self.folder / "output_potential.asi"

    @property
    def yace(self) -> Path:
        return self.folder / "output_potential.yace"


@dataclass
class TestErrors:
    """``validate``'s numbers for one potential on the held-out test set."""

    energy_rmse_mev_per_atom: float
    force_rmse_mev_per_A: float
    broken: int  # test structures whose worst force error exceeds BROKEN_FORCE_ERROR


@dataclass(frozen=True)
class _Pipeline:
    """The pipeline's commands as the demo calls them: one config, meta config and progress setting."""

    config: WorkerConfig
    meta: MetaConfig
    show_progress: Optional[bool]

    def train(self, dataset: Path, n_labels: int, iteration: int, output_dir: Path,
              initial: Optional[Path]) -> TrainedPotential:
        train(TrainRequest(dataset=dataset, iteration=iteration, config=self.config, meta=self.meta,
                           initial_potential=initial, output_dir=output_dir, show_progress=self.show_progress))
        return TrainedPotential(output_dir, n_labels)

    def validate(self, potential: TrainedPotential, test_set: Path, output: Path) -> TestErrors:
        result = validate(ValidateRequest(potential=potential.yace, output=output, test_set=test_set,
                                          config=self.config, meta=self.meta, plots=False, show_progress=False))
        _, overall = result.rows[0]
        worst = result.per_structure.force_max_error
        return TestErrors(overall.energy_rmse_mev_per_atom, overall.force_rmse_mev_per_A,
                          int(np.sum(np.asarray(worst) > BROKEN_FORCE_ERROR)))


@dataclass
class _Setup:
    """What every strategy's loop starts from (steps 1 and 2)."""

    pipeline: _Pipeline
    initial_labels: list
    test_path: Path
    first: TrainedPotential
    first_errors: TestErrors
    first_time: float


def _write(path: Path, structures) -> Path:
    write_extxyz_atomic(path, list(structures))
    return path


def active_learning_demo(request: DemoRequest) -> DemoResult:
    """The loop for every seed and every strategy in ``request.strategies`` (per seed, one shared
    start); labels to target and their ratios, the learning curve and ``demo_summary.json``."""
    t0 = time.perf_counter()
    workdir = Path(request.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yaml"
    if not config_path.is_file():
        config_path.write_text(DEMO_CONFIG)
    pipeline = _Pipeline(load_worker_config(config_path), MetaConfig(device="cpu", workers=request.workers,
                                                                      chunk_size=8), request.show_progress)
    rows: list[IterationRow] = []
    for seed in request.seeds:
        seed_dir = workdir / f"seed_{seed}"
        seed_dir.mkdir(exist_ok=True)
        setup = _shared_start(request, seed, seed_dir, pipeline)
        for strategy in request.strategies:
            rows.extend(_StrategyLoop(request, seed, strategy, seed_dir / strategy, setup).run())

    needed = labels_to_target(rows, request.target_force_rmse)
    ratios = label_ratios(needed, request.strategies[0])
    files = {"config": config_path, "learning_curve": workdir / "learning_curve.png",
             "summary": workdir / "demo_summary.json"}
    learning_curve(files["learning_curve"], rows, request.target_force_rmse)
    result = DemoResult(rows, request.target_force_rmse, needed, ratios, time.perf_counter() - t0, files)
    write_json_atomic(files["summary"], summary_json(request, result))
    return result


def labels_to_target(rows: Sequence[IterationRow], target: Optional[float]) -> list[LabelsToTarget]:
    """Per seed and strategy: the first potential at or below ``target`` (or, not reached, the last)."""
    out = []
    for seed, strategy in dict.fromkeys((r.seed, r.strategy) for r in rows):
        mine = [r for r in rows if (r.seed, r.strategy) == (seed, strategy)]
        hit = next((r for r in mine if target is not None and r.force_rmse_mev_per_A <= target), None)
        row = hit or mine[-1]
        out.append(LabelsToTarget(seed, strategy, row.labels, hit is not None, row.force_rmse_mev_per_A))
    return out


def label_ratios(needed: Sequence[LabelsToTarget], reference_of: str) -> list[LabelRatio]:
    """Per seed, ``reference_of``'s labels to target over every other strategy's (the first
    strategy against those it is compared with: maxvol / random < 1 means maxvol needed fewer)."""
    out = []
    for seed in dict.fromkeys(n.seed for n in needed):
        by = {n.strategy: n for n in needed if n.seed == seed}
        if reference_of not in by:
            continue
        mine = by[reference_of]
        for other in (n for s, n in by.items() if s != reference_of):
            bound = {(True, True): "=", (True, False): "<", (False, True): ">", (False, False): "?"}[
                (mine.reached, other.reached)]
            ratio = None if bound == "?" else mine.labels / other.labels
            out.append(LabelRatio(seed, reference_of, other.strategy, ratio, bound))
    return out


def summary_json(request: DemoRequest, result: DemoResult) -> dict:
    """``demo_summary.json``: the settings that decide the numbers, every iteration, labels to target."""
    return {"schema": SCHEMA, "seeds": list(request.seeds), "strategies": list(request.strategies),
            "target_force_rmse_mev_per_A": request.target_force_rmse,
            "labels_per_iteration": request.labels_per_iteration, "label_budget": request.label_budget,
            "wall_time_s": round(result.wall_time_s, 1),
            "rows": [r.__dict__ for r in result.rows],
            "labels_to_target": [n.__dict__ for n in result.labels_to_target],
            "ratios": [r.__dict__ for r in result.ratios],
            "outputs": {k: str(v) for k, v in result.files.items()}}


def labels_to_target_table(result: DemoResult) -> str:
    """Plain-text table: labels each strategy needed per seed ('>' = not reached within the
    budget) and the ratios of the first strategy to each other, with their mean over seeds."""
    strategies = list(dict.fromkeys(n.strategy for n in result.labels_to_target))
    seeds = list(dict.fromkeys(n.seed for n in result.labels_to_target))
    pairs = list(dict.fromkeys((r.strategy, r.reference) for r in result.ratios))
    head = f"{'seed':>4s} " + " ".join(f"{s:>10s}" for s in strategies) + "".join(
        f" {a + '/' + b:>16s}" for a, b in pairs)
    target = "-" if result.target_force_rmse is None else f"{result.target_force_rmse:g}"
    lines = [f"labels needed to reach a test force RMSE <= {target} meV/Å ('>' = not reached within the "
             f"budget)", head]
    for seed in seeds:
        cells = []
        for s in strategies:
            n = next(n for n in result.labels_to_target if (n.seed, n.strategy) == (seed, s))
            cells.append(f"{n.labels}" if n.reached else f">{n.labels}")
        for a, b in pairs:
            r = next(r for r in result.ratios if (r.seed, r.strategy, r.reference) == (seed, a, b))
            cells_r = "?" if r.ratio is None else ("" if r.bound == "=" else r.bound) + f"{r.ratio:.2f}"
            cells.append(cells_r)
        lines.append(f"{seed:>4d} " + " ".join(f"{c:>10s}" for c in cells[:len(strategies)])
                     + "".join(f" {c:>16s}" for c in cells[len(strategies):]))
    for a, b in pairs:
        known = [r.ratio for r in result.ratios if (r.strategy, r.reference) == (a, b) and r.ratio is not None]
        if known:
            lines.append(f"{a}/{b}: mean {np.mean(known):.2f}, min {np.min(known):.2f}, max {np.max(known):.2f} "
                         f"over {len(known)} seeds ('<' / '>': a bound, one strategy did not reach the target)")
    return "\n".join(lines)


def _shared_start(request: DemoRequest, seed: int, workdir: Path, pipeline: _Pipeline) -> _Setup:
    """Steps 1–2 for one seed: raw pool → DIRECT picks → EMT labels, the held-out test set, iteration 1."""

    rng = np.random.default_rng(seed)
    pool = raw_pool(request.pool_size, seed)
    pool_path = _write(workdir / "raw_pool.xyz", pool)
    initial = direct_sample(DirectSampleRequest(input=pool_path, output=workdir / "initial_picks.xyz",
                                                n_clusters=request.initial_labels, config=pipeline.config,
                                                meta=pipeline.meta, seed=seed, show_progress=request.show_progress))
    initial_labels = label_with_emt(ase.io.read(workdir / "initial_picks.xyz", ":"))
    picked = set(initial.picks)
    unseen = [i for i in range(len(pool)) if i not in picked]
    test_starts = [pool[i] for i in rng.choice(unseen, size=8, replace=False)]
    temperatures = list(np.linspace(300, 1500, len(test_starts)))
    md_frames = emt_md_snapshots(test_starts, temperatures, MDRun(steps=150, every=30), seed=seed + 1000)
    md_budget = (2 * request.test_structures) // 3  # two thirds MD snapshots, one third unseen pool structures
    if len(md_frames) > md_budget:
        md_frames = [md_frames[i] for i in np.linspace(0, len(md_frames) - 1, md_budget).astype(int)]
    raw_test = label_with_emt([pool[i] for i in rng.choice(unseen, size=max(0, request.test_structures
                                                                                - len(md_frames)), replace=False)])
    test_path = _write(workdir / "test_set.xyz", md_frames + raw_test)
    log.info("demo seed %d: %d initial labels (DIRECT), held-out test set of %d structures", seed,
             len(initial_labels), len(md_frames) + len(raw_test))

    shared = workdir / "iteration_1"  # iteration 1, shared by all strategies
    shared.mkdir(exist_ok=True)
    dataset = _write(shared / "labels.xyz", initial_labels)
    t0 = time.perf_counter()
    first = pipeline.train(dataset, len(initial_labels), 1, shared, None)
    first_errors = pipeline.validate(first, test_path, shared / "validation.json")
    return _Setup(pipeline, initial_labels, test_path, first, first_errors, time.perf_counter() - t0)


@dataclass
class _StrategyLoop:
    """Iterations 2… of one strategy at one seed, from the shared iteration-1 potential, in ``folder``."""

    request: DemoRequest
    seed: int
    strategy: str
    folder: Path
    setup: _Setup

    def run(self) -> list[IterationRow]:
        request, setup, folder = self.request, self.setup, self.folder
        folder.mkdir(exist_ok=True)
        labels = list(setup.initial_labels)
        potential, errors, wall = setup.first, setup.first_errors, setup.first_time
        rows = []
        for iteration in range(1, request.iterations + 1):
            t0 = time.perf_counter()
            gamma_max = n_candidates = None
            reached = (request.target_force_rmse is not None
                       and errors.force_rmse_mev_per_A <= request.target_force_rmse)
            last = iteration == request.iterations or reached
            if not last:
                picked, gamma_max, n_candidates = self.explore_and_pick(iteration, potential, labels)
                last = picked is None
                labels.extend(label_with_emt(picked or []))
            rows.append(IterationRow(self.seed, self.strategy, iteration, potential.n_labels,
                                     errors.energy_rmse_mev_per_atom, errors.force_rmse_mev_per_A, errors.broken,
                                     gamma_max, n_candidates, wall + time.perf_counter() - t0))
            log.info("demo seed %d %s iteration %d: %d labels, test F RMSE %.1f meV/A, exploration max γ %s",
                     self.seed, self.strategy, iteration, potential.n_labels, errors.force_rmse_mev_per_A,
                     "-" if gamma_max is None else f"{gamma_max:.2f}")
            if last:
                break
            t1 = time.perf_counter()
            dataset = _write(folder / f"labels_{iteration + 1}.xyz", labels)
            out = folder / f"iteration_{iteration + 1}"
            potential = setup.pipeline.train(dataset, len(labels), iteration + 1, out, potential.yaml)
            errors = setup.pipeline.validate(potential, setup.test_path, out / "validation.json")
            wall = time.perf_counter() - t1
        return rows

    def explore_and_pick(self, iteration: int, potential: TrainedPotential, labels: list):
        """``(picks to label, or None when the loop ends here; exploration max γ; candidates)``."""

        request, setup, seed, folder = self.request, self.setup, self.seed, self.folder
        starts = [labels[i] for i in np.random.default_rng(seed + iteration).choice(
            len(setup.initial_labels), size=min(request.md_starts, len(setup.initial_labels)), replace=False)]
        candidates, gamma_max = explore(potential.yaml, potential.asi, starts, TEMPERATURES,
                                        MDRun(request.md_steps, request.snapshot_every, request.gamma_stop),
                                        seed + 10 * iteration)
        if not candidates:  # every trajectory turned unphysical at once: nothing to label
            log.warning("demo seed %d %s iteration %d: exploration left no physical snapshot; stopping this loop",
                        seed, self.strategy, iteration)
            return None, gamma_max, 0
        pool_path = _write(folder / f"candidates_{iteration}.xyz", candidates)
        picks_path = folder / f"picks_{iteration}.xyz"
        sample(SampleRequest(candidates=pool_path, n_samples=request.labels_per_iteration, output=picks_path,
                             potential=potential.yaml, strategy=self.strategy, seed=seed + iteration,
                             config=setup.pipeline.config, meta=setup.pipeline.meta,
                             show_progress=request.show_progress))
        picked = ase.io.read(picks_path, ":", format="extxyz")  # an empty file: nothing left to learn
        for atoms in picked:
            atoms.info.pop("gamma_max", None)
            atoms.arrays.pop("gamma", None)
        if not picked:
            log.warning("demo seed %d %s iteration %d: no candidate is extrapolative (γ > gamma_min): nothing left "
                        "to learn from this exploration; stopping this loop", seed, self.strategy, iteration)
            return None, gamma_max, len(candidates)
        return picked, gamma_max, len(candidates)
