"""``train`` within a wall-time budget: which basis is fitted, how, and what is published.

With ``fit.max_time`` set (and ``train.schedule: auto``, the default) ``train`` does not hand the whole
budget to one pacemaker run of a fixed basis. It

1. holds out a **validation split** of the training structures (``train.validation_size``, default
   0.1; a stable hash like the test split, so a structure keeps its role as the data grow). It
   chooses between candidates; the test set is never used for a choice (its errors are only reported).
2. **sizes the basis** to the data and the budget: the template's shape, at most
   :data:`FORCE_ROWS_PER_FUNCTION` force components per function of the rarest element, and small
   enough that one pass over the data takes at most :data:`LINEAR_SHARE` of the remaining budget
   (the pass's cost is measured on the first structures before it starts).
3. **fits linear ACE** (:mod:`pace_worker.ace.linear_ace`: pyace's B-projections and their gradients,
   exact weighted least squares) for a nested family of sizes (the chosen one and 1/2, 1/4, 1/8 of
   it) in that one pass. The structures stream in; at each quarter of them every size and ridge is
   solved and scored on the validation split (a usable potential exists after the first quarter, and
   a pass that the clock cuts short keeps what it has). The size and ridge with the lowest validation
   loss are refitted on all training structures, validation included, and published.

Why not pacemaker's optimizer: on the machines this was tuned on (2 CPU cores) one BFGS step of the
template basis on the Si benchmark (13k atoms) takes 6–17 s, so the budget buys 100–300 steps, far
from converged; continuing the linear potential with BFGS (nonlinear embedding, trainable radial
functions) lowered the loss by 0.4 % in 14 steps. The exact linear optimum of a larger basis is
better than an unconverged nonlinear fit of the same basis (README: "Training within a budget").

Every choice and its reason is recorded (:class:`ScheduleRecord`, ``schedule`` in
``train_metrics.json``).
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from pace_worker.ace import linear_ace
from pace_worker.files.structures import LabelledStructures
from pace_worker.parallel.executor import ChunkExecutor, default_workers
from pace_worker.stack import import_pyace

log = logging.getLogger(__name__)

#: energy-row weight of the linear least squares relative to one force component, when config.yaml
#: does not set fit.loss.kappa: errors are counted in units of 1 meV/atom and ~32 meV/Å (the ratio of
#: the accuracies good potentials reach on both), so one meV/atom of energy error costs as much as
#: 32 meV/Å on one force component. Measured on Si (Zuo): weight 100 → test E MAE 3.8 meV/atom, 1000 → 2.0,
#: 3000 → 1.9 with forces 57 → 57 → 58 meV/Å.
ENERGY_ROW_WEIGHT = 1000.0
#: force components per linear coefficient at least (keeps the fit well determined)
FORCE_ROWS_PER_FUNCTION = 30
#: the design pass's share of the remaining budget when sizing the basis (measured cost)
LINEAR_SHARE = 0.5
#: seconds kept free at the end of the budget for publishing (active set, .yace, test errors)
PUBLISH_RESERVE_S = 60.0
RIDGES = (1e-12, 1e-10, 1e-8)
SIZE_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 1)
CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)
MIN_FUNCTIONS = 8


@dataclass
class BudgetClock:
    """The wall-time budget of one ``train``, counted from the command's start."""

    start: float
    max_time: float

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        return self.max_time - self.elapsed()


@dataclass
class ValidationErrors:
    energy_rmse_mev_per_atom: float
    energy_mae_mev_per_atom: float
    force_rmse_mev_per_A: Optional[float]
    force_mae_mev_per_A: Optional[float]
    loss: float  # the weighted loss per structure (what candidates are ranked by)


@dataclass
class Checkpoint:
    """The best candidate after part of the training structures had streamed in."""

    time_s: float
    structures: int
    functions_per_element: int
    ridge: float
    validation: Optional[ValidationErrors]
    test: Optional[ValidationErrors] = None  # reported, never chosen on


@dataclass
class StageRecord:
    """One stage of the schedule, as ``train_metrics.json`` reports it."""

    stage: str
    started_s: float
    wall_time_s: float
    n_functions: Optional[int] = None
    functions_per_element: Optional[int] = None
    validation: Optional[ValidationErrors] = None
    reason: str = ""
    checkpoints: list[Checkpoint] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    potential: Optional[str] = None


@dataclass
class ScheduleRecord:
    max_time_s: float
    validation_structures: int
    energy_row_weight: float
    stages: list[StageRecord] = field(default_factory=list)
    published: Optional[str] = None
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LinearProblem:
    """What the linear stage fits: a basis section, the structures, and how energies count."""

    section: dict
    fit: LabelledStructures
    validation: Optional[LabelledStructures]
    test: Optional[LabelledStructures]
    reference: object  # "auto"/None (fitted per element) or a dict of fixed reference energies
    row_weight: float
    max_functions: Optional[int] = None  # the configured number_of_functions_per_element (a user's basis)
    start_functions: Optional[int] = None  # functions per element of the potential a warm start re-solves

    @property
    def fit_reference(self) -> bool:
        return self.reference == "auto" or self.reference is None

    @property
    def given_reference(self) -> Optional[dict]:
        return None if self.fit_reference else self.reference


@dataclass
class RunSettings:
    """How the stage runs: workers, progress bars, pacemaker's ``repulsion`` setting."""

    workers: Optional[int] = None
    show_progress: Optional[bool] = None
    repulsion: object = "auto"


def energy_row_weight(kappa: Optional[float], n_structures: int, n_atoms: int) -> float:
    """The linear fit's weight of an energy-per-atom row relative to a force-component row.

    pacemaker's loss is ``(1-κ) Σ_s ΔE_s²/n_s + κ Σ_atoms |ΔF|²/n_atoms`` (uniform weights); per row
    that is a ratio ``(1-κ)/κ · n_atoms/n_s``. Without an explicit κ: :data:`ENERGY_ROW_WEIGHT`.
    """
    if kappa is None:
        return ENERGY_ROW_WEIGHT
    if kappa <= 0:
        return 1e12
    return (1 - kappa) / kappa * n_atoms / max(1, n_structures)


def kappa_for(row_weight: float, n_structures: int, n_atoms: int) -> float:
    """pacemaker's κ with the same energy/force balance as a linear row weight."""
    return 1.0 / (1.0 + row_weight * n_structures / max(1, n_atoms))


def row_errors(rows: dict, coefficients: np.ndarray, row_weight: float) -> ValidationErrors:
    """Errors of linear coefficients on raw rows (``energy``/``forces`` rows and targets)."""
    de = (linear_ace.predict(rows["energy_rows"], coefficients) - rows["energy_targets"]) * 1e3
    df = (linear_ace.predict(rows["force_rows"], coefficients) - rows["force_targets"]) * 1e3 \
        if rows["force_rows"] is not None else np.zeros(0)
    n = max(1, len(de))
    loss = (row_weight * float(np.sum(de ** 2)) + float(np.sum(df ** 2))) / n * 1e-6
    return ValidationErrors(
        energy_rmse_mev_per_atom=float(np.sqrt(np.mean(de ** 2))), energy_mae_mev_per_atom=float(np.mean(np.abs(de))),
        force_rmse_mev_per_A=float(np.sqrt(np.mean(df ** 2))) if df.size else None,
        force_mae_mev_per_A=float(np.mean(np.abs(df))) if df.size else None, loss=loss)


def template_size(section: dict) -> int:
    """Functions per element of the whole template shape of ``section`` (an upper bound of sizes)."""
    spec = dict(section)
    spec["functions"] = {**spec.get("functions", {}), "number_of_functions_per_element": 100000}
    bconf = linear_ace.build_configuration(linear_ace.linear_section(spec))
    from pyace import ACEBBasisSet
    from pyace.activelearning import compute_number_of_functions

    return int(max(compute_number_of_functions(ACEBBasisSet(bconf))))


def nested_sizes(largest: int) -> list[int]:
    return sorted({max(MIN_FUNCTIONS, int(round(largest * f))) for f in SIZE_FRACTIONS})


def _items(structures: Optional[LabelledStructures]) -> list[tuple]:
    if structures is None:
        return []
    return list(zip(structures.atoms, structures.energies, structures.forces))


def probe_seconds_per_atom(task: linear_ace.DesignTask, structures: LabelledStructures, n_probe: int = 2) -> float:
    """Seconds of one design row pass per atom, measured on the first structures in this process."""
    linear_ace.init_design_worker(task)
    atoms = 0
    start = time.perf_counter()
    for item in _items(structures.subset(range(min(n_probe, len(structures))))):
        linear_ace.structure_rows(task, *item)
        atoms += len(item[0])
    return (time.perf_counter() - start) / max(1, atoms)


@dataclass
class BasisPlan:
    layout: linear_ace.NestedColumns
    task: linear_ace.DesignTask
    predicted_pass_s: float
    reasons: list[str]


def _design_task(problem: LinearProblem, largest: int, basis_path: Path):
    layout, big = linear_ace.nested_columns(problem.section, nested_sizes(largest), problem.fit_reference)
    big.save(str(basis_path))
    return layout, linear_ace.DesignTask(str(basis_path), layout, problem.given_reference)


def plan_basis(problem: LinearProblem, clock: BudgetClock, folder: Path, workers: int) -> BasisPlan:
    """The largest size the template, the data and the budget allow (reasons recorded)."""
    template = template_size(problem.section)
    by_data = max(MIN_FUNCTIONS, 3 * min(problem.fit.atoms_per_element().values()) // FORCE_ROWS_PER_FUNCTION)
    largest = min(template, by_data, problem.max_functions or template)
    reasons = [f"{largest} functions per element: the whole shape's {template}"
               + (f", the configured number_of_functions_per_element {problem.max_functions}"
                  if problem.max_functions else "")
               + f" or at most {FORCE_ROWS_PER_FUNCTION} force components per function of the rarest element "
                 f"({by_data})"]
    n_atoms = sum(s.n_atoms for s in (problem.fit, problem.validation, problem.test) if s is not None)
    basis_path = folder / "linear_basis.yaml"
    layout, task = _design_task(problem, largest, basis_path)
    per_atom = probe_seconds_per_atom(task, problem.fit)
    predicted = per_atom * n_atoms / workers * 1.15
    allowed = LINEAR_SHARE * (clock.remaining() - PUBLISH_RESERVE_S)
    if predicted > allowed:
        shrunk = max(MIN_FUNCTIONS, int(largest * max(allowed, 0.0) / predicted))
        reasons.append(f"the pass over the data would take {predicted:.0f} s at {largest} functions per element "
                       f"({per_atom * 1e3:.2f} ms per atom on {workers} workers), more than {LINEAR_SHARE:.0%} of "
                       f"the remaining budget ({allowed:.0f} s): {shrunk} functions per element")
        layout, task = _design_task(problem, shrunk, basis_path)
        predicted = probe_seconds_per_atom(task, problem.fit) * n_atoms / workers * 1.15
    log.info("linear ACE: sizes %s functions per element (%s functions), predicted pass %.0f s",
             layout.sizes, layout.n_functions, predicted)
    return BasisPlan(layout, task, predicted, reasons)


def _stack_rows(blocks) -> Optional[dict]:
    if not blocks:
        return None
    forces = [b for b in blocks if b.force_rows is not None]
    return {"energy_rows": np.vstack([b.energy_rows for b in blocks]),
            "energy_targets": np.concatenate([b.energy_targets for b in blocks]),
            "force_rows": np.vstack([b.force_rows for b in forces]) if forces else None,
            "force_targets": np.concatenate([b.force_targets for b in forces]) if forces else None}


def _merge_shortest(a: dict, b: dict) -> dict:
    out = dict(a)
    for bond, d in b.items():
        out[bond] = min(d, out.get(bond, np.inf))
    return out


@dataclass
class Candidate:
    size_index: int
    ridge: float
    validation: Optional[ValidationErrors]


def _weights(solver, row_weight: float) -> dict:
    weights = {linear_ace.ENERGY: row_weight}
    if linear_ace.FORCES in solver.factors_:
        weights[linear_ace.FORCES] = 1.0
    return weights


def score_candidates(solver, layout, validation_rows: Optional[dict], row_weight: float) -> list[Candidate]:
    """Every size and ridge solved from the rows so far, scored on the validation rows."""
    candidates = []
    weights = _weights(solver, row_weight)
    for index in range(len(layout.sizes)):
        for ridge in RIDGES:
            coef = solver.solve(weights, layout.columns_of(index), ridge)
            errors = row_errors(validation_rows, coef, row_weight) if validation_rows is not None else None
            candidates.append(Candidate(index, ridge, errors))
    return candidates


def best_candidate(candidates: list[Candidate]) -> Candidate:
    scored = [c for c in candidates if c.validation is not None]
    if not scored:  # no validation structures: the largest basis, the smallest ridge
        return max(candidates, key=lambda c: (c.size_index, -c.ridge))
    return min(scored, key=lambda c: c.validation.loss)


@dataclass
class StreamedDesign:
    solver: object
    shortest: dict
    validation_rows: Optional[dict]
    checkpoints: list[Checkpoint]
    candidates: list[Candidate]
    structures: int
    cut_short: bool


def stream_design(problem: LinearProblem, plan: BasisPlan, clock: BudgetClock, run: RunSettings) -> StreamedDesign:
    """Rows of the validation and test structures, then the training structures streamed in chunks with
    a scored checkpoint at each quarter; stops early (keeping what it has) when the budget runs out."""
    workers = run.workers or default_workers()
    layout = plan.layout
    chunk = max(1, math.ceil(len(problem.fit) / (8 * workers)))
    executor = ChunkExecutor(workers, chunk_size=chunk, show_progress=run.show_progress)
    held = {}
    shortest: dict = {}
    for name, structures in (("validation", problem.validation), ("test", problem.test)):
        blocks = list(executor.map(linear_ace.validation_chunk, _items(structures), linear_ace.init_design_worker,
                                   (plan.task,), description=f"linear ACE ({name})")) if structures else []
        held[name] = _stack_rows(blocks)
        if name == "validation":  # the core repulsion sees the structures the potential is fitted to
            for block in blocks:
                shortest = _merge_shortest(shortest, block.shortest)
    solver = linear_ace.accumulate([], layout)
    marks = [max(1, round(f * len(problem.fit))) for f in CHECKPOINTS]
    checkpoints, candidates, done, cut_short = [], [], 0, False
    stream = executor.map(linear_ace.training_chunk, _items(problem.fit), linear_ace.init_design_worker,
                          (plan.task,), description="linear ACE")
    for block in stream:
        linear_ace.accumulate([block], layout, into=solver)
        shortest = _merge_shortest(shortest, block.shortest)
        done += len(block.energy_targets)
        if done >= marks[0] or clock.remaining() < PUBLISH_RESERVE_S:
            while marks and done >= marks[0]:
                marks.pop(0)
            candidates = score_candidates(solver, layout, held["validation"], problem.row_weight)
            best, test = _best_and_test(solver, layout, candidates, held["test"], problem.row_weight)
            checkpoints.append(Checkpoint(time_s=clock.elapsed(), structures=done,
                                          functions_per_element=layout.sizes[best.size_index], ridge=best.ridge,
                                          validation=best.validation, test=test))
            if clock.remaining() < PUBLISH_RESERVE_S and done < len(problem.fit):
                cut_short = True
                stream.close()
                break
    return StreamedDesign(solver, shortest, held["validation"], checkpoints, candidates, done, cut_short)


def _best_and_test(solver, layout, candidates: list[Candidate], test_rows: Optional[dict],
                   row_weight: float) -> tuple[Candidate, Optional[ValidationErrors]]:
    """The best candidate by validation and its errors on the test rows (reported, never chosen on)."""
    best = best_candidate(candidates)
    if test_rows is None:
        return best, None
    coef = solver.solve(_weights(solver, row_weight), layout.columns_of(best.size_index), best.ridge)
    return best, row_errors(test_rows, coef, row_weight)


@dataclass
class LinearFit:
    """The outcome of the linear stage."""

    potential: Path
    record: StageRecord


def linear_stage(problem: LinearProblem, clock: BudgetClock, folder: Path, run: RunSettings) -> LinearFit:
    """Plan the basis, stream the data, choose by validation, refit on everything; write the potential."""
    import_pyace()
    started = clock.elapsed()
    plan = plan_basis(problem, clock, folder, run.workers or default_workers())
    design_start = time.perf_counter()
    streamed = stream_design(problem, plan, clock, run)
    design_s = time.perf_counter() - design_start
    layout, solver = plan.layout, streamed.solver
    chosen = best_candidate(streamed.candidates)
    reasons = list(plan.reasons)
    if streamed.cut_short:
        reasons.append(f"the budget ran out after {streamed.structures} of {len(problem.fit)} training structures: "
                       f"fitted on those")
    if chosen.validation is not None:
        reasons.append(f"{layout.sizes[chosen.size_index]} functions per element and ridge {chosen.ridge:g}: the "
                       f"lowest validation loss of {len(streamed.candidates)} candidates; refitted with the "
                       f"validation structures")
        rows = streamed.validation_rows
        solver.add(linear_ace.ENERGY, rows["energy_rows"], rows["energy_targets"])
        if rows["force_rows"] is not None:
            solver.add(linear_ace.FORCES, rows["force_rows"], rows["force_targets"])
    else:
        reasons.append("no validation structures: the largest basis")
    coef = solver.solve(_weights(solver, problem.row_weight), layout.columns_of(chosen.size_index), chosen.ridge)
    reference = linear_ace.fitted_reference(layout, coef, problem.given_reference)
    bconf = linear_ace.fs_potential(problem.section, layout, chosen.size_index, coef, reference)
    if run.repulsion == "auto":
        linear_ace.add_core_repulsion(bconf, streamed.shortest)
    path = folder / "linear_potential.yaml"
    bconf.save(str(path))
    record = StageRecord(
        stage="linear", started_s=started, wall_time_s=clock.elapsed() - started,
        n_functions=int(bconf.total_number_of_functions), functions_per_element=layout.sizes[chosen.size_index],
        validation=chosen.validation, reason="; ".join(reasons), potential=path.name,
        checkpoints=streamed.checkpoints,
        details={"sizes": layout.sizes, "n_functions": layout.n_functions, "design_pass_s": design_s,
                 "predicted_pass_s": plan.predicted_pass_s, "ridge": chosen.ridge,
                 "energy_row_weight": problem.row_weight, "structures_fitted": streamed.structures,
                 "candidates": [{"functions_per_element": layout.sizes[c.size_index], "ridge": c.ridge,
                                 "validation": asdict(c.validation) if c.validation else None}
                                for c in streamed.candidates],
                 "reference_energy": reference})
    log.info("linear ACE: %d functions per element chosen in %.0f s", layout.sizes[chosen.size_index],
             record.wall_time_s)
    return LinearFit(path, record)


# ----------------------------------------------------------------------------- the whole schedule
#: the potential's metadata key that says which stage produced it (a warm start re-solves a linear fit)
FIT_KIND_KEY = "pace_worker_fit"
OUTPUT_NAME = "output_potential.yaml"


@dataclass
class BudgetFit:
    """What the schedule published in the iteration folder (``output_potential.yaml``)."""

    record: ScheduleRecord
    kind: str = "linear"


def fit_kind(potential_yaml: Path) -> Optional[str]:
    import_pyace()
    from pyace import BBasisConfiguration

    return dict(BBasisConfiguration(str(potential_yaml)).metadata).get(FIT_KIND_KEY)


def mark_fit_kind(potential_yaml: Path, kind: str) -> None:
    from pyace import BBasisConfiguration

    bconf = BBasisConfiguration(str(potential_yaml))
    bconf.metadata[FIT_KIND_KEY] = kind
    bconf.save(str(potential_yaml))


def fit_within_budget(problem: LinearProblem, kappa_given: bool, clock: BudgetClock, folder: Path,
                      run: RunSettings) -> BudgetFit:
    """Run the schedule (module docstring) and leave the chosen potential as ``folder/output_potential.yaml``."""
    n_val = len(problem.validation) if problem.validation is not None else 0
    record = ScheduleRecord(max_time_s=clock.max_time, validation_structures=n_val,
                            energy_row_weight=problem.row_weight)
    linear = linear_stage(problem, clock, folder, run)
    record.stages.append(linear.record)
    record.published = "linear"
    record.reason = ("the linear stage's potential: refitted with the size and ridge of the lowest validation loss"
                     + ("" if kappa_given else f" (energy rows weighted {problem.row_weight:g}× a force component; "
                        "set fit.loss.kappa to choose the balance)"))
    chosen = linear.record.functions_per_element
    if problem.start_functions is not None and chosen != problem.start_functions:
        change = "grown" if chosen > problem.start_functions else "shrunk"
        record.reason += (f"; the basis {change} from the starting potential's {problem.start_functions} to {chosen} "
                          f"functions per element (chosen again on the grown data)")
        log.info("the basis %s from %d to %d functions per element", change, problem.start_functions, chosen)
    target = folder / OUTPUT_NAME
    shutil.copyfile(linear.potential, target)
    mark_fit_kind(target, record.published)
    return BudgetFit(record=record, kind=record.published)


def error_points(record: ScheduleRecord, published_test: Optional[dict], publish_time_s: float) -> list[dict]:
    """The schedule's checkpoints (and the published potential's test errors) as plot points."""
    points = []
    for stage in record.stages:
        for cp in stage.checkpoints:
            for which, errors in (("validation", cp.validation), ("test", cp.test)):
                if errors is not None:
                    points.append({"time_s": cp.time_s, "set": which, "stage": stage.stage,
                                   "energy_rmse_mev_per_atom": errors.energy_rmse_mev_per_atom,
                                   "force_rmse_mev_per_A": errors.force_rmse_mev_per_A})
    if published_test:
        points.append({"time_s": publish_time_s, "set": "test", "stage": "published", "published": True,
                       "energy_rmse_mev_per_atom": published_test.get("energy_rmse_mev_per_atom"),
                       "force_rmse_mev_per_A": published_test.get("force_rmse_mev_per_A")})
    return points
