"""``train``: fit an ACE potential with pacemaker and publish it with its .yace, .asi and metrics.

:func:`train` is the pure core of the command: a :class:`TrainRequest` in, a
:class:`TrainResult` out; the CLI only parses flags and prints.

Folders
-------
* output folder (``meta_config.output_dir``, default: the dataset's folder) receives
  ``output_potential.yaml``, ``.yace``, ``.asi``, ``test_set.xyz`` and ``train_metrics.json``,
  each renamed into place only after the whole run succeeded (``.yace`` last: it is what the
  orchestrator waits for).
* ``iterations/iter_NNN/`` (under ``meta_config.work_dir`` if set, else under the output folder)
  is pacemaker's working folder for iteration N, kept as the archive of that iteration.

Starting point
--------------
* nothing: a cold fit of the basis from config.yaml (or the default basis rule).
* ``--initial-potential P``: continue from P's coefficients (pacemaker ``-p P``). If the target
  basis (config, default rule or ``--potential-yaml``) has more functions than P, the basis is
  grown to the target in one ladder step that keeps P's coefficients (logged as "grow").
  A ``.yace`` is replaced by the ``.yaml`` next to it (a .yace cannot be refitted).
* ``--potential-yaml Y``: Y replaces the potential section (pacemaker ``-p Y``: its basis and
  its coefficients as the starting point).
* ``--asi A``: the active set of the *previous* potential (the one of ``--initial-potential`` or
  ``--potential-yaml``). It is checked against that potential and used to report how
  extrapolative the new training data were for it (``previous_potential_gamma`` in the
  metrics). It is never copied: the new potential always gets a new ``.asi`` computed over its
  own training set, and when none can be computed the old one is removed, so a potential never
  sits next to a stale active set.

Iterations and resume
---------------------
``--iteration N`` names ``iter_NNN``, is written into the metrics and seeds the fit
(``seed + N``). Rerunning a finished iteration replaces that iteration's folder only. If a run
of iteration N was interrupted (its ``state.json`` says ``running``) and the inputs are the same
(same dataset, config and starting potential), the rerun continues from the last interim
potential pacemaker saved (``interim_potential_0.yaml``, written every optimizer step) with
the full ``maxiter``; the interrupted run's output is kept as ``pacemaker.out`` (appended).
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional, Union

import numpy as np
import yaml

from pace_worker.ace import activeset, potentials
from pace_worker.ace.linear_ace import has_linear_first_density
from pace_worker.ace.pacemaker_input import build_input, potential_section
from pace_worker.ace.pacemaker_metrics import errors_from_prediction_file, loss_history
from pace_worker.ace.pacemaker_run import FitRun, run_pacemaker
from pace_worker.ace.potential_errors import evaluate_potential
from pace_worker.algorithms.error_metrics import ErrorLine, headline_errors
from pace_worker.algorithms.train_test_split import stable_split, validation_split
from pace_worker.commands.train_schedule import (
    BudgetClock,
    BudgetFit,
    LinearProblem,
    RunSettings,
    ScheduleRecord,
    energy_row_weight,
    error_points,
    fit_kind,
    fit_within_budget,
)
from pace_worker.config import MetaConfig, PacemakerSettings, WorkerConfig
from pace_worker.errors import InputError, check_readable_file
from pace_worker.files.atomic_io import disk_full_is_one_line, publish, write_json_atomic
from pace_worker.files.folder_lock import LOCK_NAME, exclusive_folder
from pace_worker.files.iteration_folder import IterationFolder, fingerprint
from pace_worker.files.output_paths import check_replaceable
from pace_worker.files.structures import (
    LabelledStructures,
    check_elements_covered,
    file_sha256,
    fully_periodic_or_not,
    read_labelled_structures,
    write_extxyz_atomic,
)
from pace_worker.parallel.executor import ChunkExecutor
from pace_worker.plots import error_vs_time
from pace_worker.stack import stack_versions

log = logging.getLogger(__name__)

METRICS_SCHEMA = "pace-worker/train_metrics/2"
MAX_ITERATION = 99999
OUTPUT_STEM = "output_potential"


@dataclass
class TrainRequest:
    dataset: Path
    iteration: int
    config: WorkerConfig = field(default_factory=WorkerConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    initial_potential: Optional[Path] = None
    potential_yaml: Optional[Path] = None
    asi: Optional[Path] = None
    output_dir: Optional[Path] = None
    show_progress: Optional[bool] = None


@dataclass
class TrainResult:
    output_dir: Path
    iteration_dir: Path
    files: dict[str, Optional[Path]]   # the published files (None: not written, e.g. no test set)
    metrics: dict                      # train_metrics.json
    iteration: int
    mode: str                          # cold, warm, grow, resume (...)
    n_functions: int
    optimizer_steps: int
    wall_time_s: float
    device: str
    max_time_s: Optional[float]        # the budget (fit.max_time) when it ended the fit, else None
    errors: dict[str, Optional[ErrorLine]]  # "train"/"test": errors of the published potential
    active_set_gamma_max: Optional[float]  # max γ over the training set (None: no active set)
    active_set_missing: Optional[str]      # why no active set was written
    schedule: Optional[str] = None         # what the budget schedule chose, in one sentence (None: pacemaker)


@dataclass
class StartingPotentials:
    """The potential files a request names, resolved to B-basis .yaml files."""

    initial: Optional[Path] = None       # --initial-potential
    given_basis: Optional[Path] = None   # --potential-yaml
    config_basis: Optional[Path] = None  # config potential: <file>

    @property
    def previous(self) -> Optional[Path]:
        """The potential an ``--asi`` belongs to."""
        return self.initial or self.given_basis

    def elements(self, settings: PacemakerSettings, data: LabelledStructures) -> tuple[list[str], str]:
        """The elements the new potential covers, and where they come from (for messages)."""
        for path, flag in ((self.given_basis, "--potential-yaml"), (self.initial, "--initial-potential"),
                           (self.config_basis, "config potential")):
            if path is not None:
                return potentials.basis_elements(path), f"{flag} '{path}' elements"
        if settings.potential is not None and not isinstance(settings.potential, str) \
                and settings.potential.elements:
            return list(settings.potential.elements), "config potential.elements"
        return data.elements, "dataset elements"


@dataclass
class TrainingData:
    """The dataset split into training and test structures, with pacemaker's structure names."""

    dataset: LabelledStructures
    train: LabelledStructures
    test: Optional[LabelledStructures]
    train_names: list[str]
    test_names: list[str]
    test_origin: list[int]  # index of each test structure in its file
    split_rule: str
    validation_index: list[int] = field(default_factory=list)  # positions in ``train`` held out (budgeted fits)

    def fit_and_validation(self) -> tuple[LabelledStructures, Optional[LabelledStructures]]:
        """The training structures without and with only the validation split."""
        if not self.validation_index:
            return self.train, None
        held = set(self.validation_index)
        return (self.train.subset([i for i in range(len(self.train)) if i not in held]),
                self.train.subset(self.validation_index))

    @property
    def energy_only_names(self) -> list[str]:
        names = [n for n, e in zip(self.train_names, self.train.energy_only) if e]
        if self.test is not None:
            names += [n for n, e in zip(self.test_names, self.test.energy_only) if e]
        return names


# ----------------------------------------------------------------------------- steps
def initial_potential_of(request: TrainRequest) -> tuple[Optional[Path], str]:
    """``--initial-potential``, else the one entry of config ``ace_model.initial_potentials``."""
    if request.initial_potential:
        return Path(request.initial_potential), "--initial-potential"
    listed = request.config.initial_potentials
    if len(listed) == 1:
        return request.config.initial_potential(), "config ace_model.initial_potentials"
    if listed:
        log.info("config ace_model.initial_potentials lists %d potentials (%s); with more than one, none is used: "
                 "give --initial-potential", len(listed), ", ".join(listed))
    return None, ""


def resolve_starting_potentials(request: TrainRequest) -> StartingPotentials:
    settings = request.config.pacemaker
    initial, initial_source = initial_potential_of(request)
    found = StartingPotentials(
        initial=potentials.resolve_b_basis(initial, initial_source) if initial else None,
        given_basis=potentials.resolve_b_basis(request.potential_yaml, "--potential-yaml")
        if request.potential_yaml else None,
        config_basis=potentials.resolve_b_basis(request.config.resolve_path(settings.potential),
                                                "config potential")
        if isinstance(settings.potential, str) else None,
    )
    if request.asi is not None:
        if found.previous is None:
            raise InputError(f"--asi '{request.asi}' is the active set of a previous potential; give that potential "
                             "with --initial-potential or --potential-yaml")
        activeset.load_active_set(Path(request.asi), found.previous)
    return found


def check_elements(structures: LabelledStructures, allowed: list[str], source: str) -> None:
    check_elements_covered(structures, allowed, "dataset", f"not covered by {source} {sorted(set(allowed))}",
                           "add them to potential.elements in config.yaml or remove those structures")


def load_training_data(request: TrainRequest, starts: StartingPotentials) -> TrainingData:
    """Read, check and split the data (everything that can be wrong is found here, before fitting)."""
    settings = request.config.pacemaker
    opts = settings.data
    read = dict(energy_key=opts.energy_key, forces_key=opts.forces_key, stress_key=opts.stress_key,
                min_distance=opts.min_distance)
    dataset_path = Path(request.dataset)
    dataset = read_labelled_structures(dataset_path, **read)
    elements, source = starts.elements(settings, dataset)
    check_elements(dataset, elements, source)
    if opts.test_filename:
        test_path = request.config.resolve_path(opts.test_filename)
        test = read_labelled_structures(test_path, **read, what="test set", given_by="config data.test_filename")
        check_elements(test, elements, source)
        train_idx, test_origin, rule = list(range(len(dataset))), list(range(len(test))), "test_filename"
        test_names = [f"{test_path.name}#{i}" for i in test_origin]
    else:
        train_idx, test_origin = stable_split(dataset.atoms, opts.test_size, settings.seed,
                                              where=f"dataset '{dataset_path}'")
        test = dataset.subset(test_origin) if test_origin else None
        test_names, rule = [f"{dataset_path.name}#{i}" for i in test_origin], "stable content hash"
    data = TrainingData(dataset=dataset, train=dataset.subset(train_idx), test=test,
                        train_names=[f"{dataset_path.name}#{i}" for i in train_idx], test_names=test_names,
                        test_origin=test_origin, split_rule=rule)
    energy_only = data.train.energy_only
    if energy_only.all():
        raise InputError(f"dataset '{dataset_path}': no training structure has forces; ACE needs forces")
    if energy_only.any() and settings.fit.weighting is not None:
        raise InputError(f"dataset '{dataset_path}' has {int(energy_only.sum())} energy-only structure(s) (first: "
                         f"{data.train_names[int(np.argmax(energy_only))]}); they need the default uniform "
                         "weighting: remove fit.weighting from config.yaml or add forces")
    return data


def plan_start(settings: PacemakerSettings, starts: StartingPotentials, data: TrainingData):
    """``(mode, potential)``: cold, warm (continue a potential) or grow (extend it to the target basis).

    ``potential`` is what goes into pacemaker's ``potential`` section: a .yaml path or a dict.
    """
    elements, _ = starts.elements(settings, data.dataset)
    per_element = data.train.atoms_per_element()
    target: Union[str, dict]
    if starts.given_basis is not None:
        target = str(starts.given_basis.resolve())
    elif starts.config_basis is not None:
        target = str(starts.config_basis.resolve())
    else:
        target = potential_section(settings, elements, {el: max(per_element.get(el, 0), 1) for el in elements})
    n_target = potentials.count_functions(target)  # builds the basis: config errors surface before the fit
    if starts.initial is None:
        return ("warm" if starts.given_basis is not None else "cold"), target
    n_initial = potentials.count_functions(starts.initial)
    if n_target > n_initial:
        grown = {"filename": target} if isinstance(target, str) else dict(target)
        grown["initial_potential"] = str(starts.initial.resolve())
        log.info("growing the basis of %s from %d to %d functions (one ladder step, coefficients kept)",
                 starts.initial, n_initial, n_target)
        return "grow", grown
    if n_target < n_initial:
        log.info("the target basis (%d functions) is smaller than %s (%d): continuing with the latter",
                 n_target, starts.initial, n_initial)
    return "warm", str(starts.initial.resolve())


def structures_dataframe(structures: LabelledStructures, names: list[str], explicit_weights: bool,
                         cutoff: float):
    """pacemaker's DataFrame: ase_atoms, energy, forces, name (+ uniform weights, zero force
    weight for energy-only structures, when ``explicit_weights``). Slabs and wires (mixed pbc,
    which pyace refuses) go in fully periodic with at least ``cutoff`` (pacemaker's neighbour-list
    cutoff) of vacuum: the same atomic environments, energies and forces."""
    import pandas as pd

    atoms = []
    for a in structures.atoms:
        copy = fully_periodic_or_not(a, cutoff)
        copy = copy.copy() if copy is a else copy
        copy.calc = None
        atoms.append(copy)
    forces = [f if f is not None else np.zeros((len(a), 3)) for f, a in zip(structures.forces, atoms)]
    df = pd.DataFrame({"ase_atoms": atoms, "energy": structures.energies, "forces": forces, "name": names})
    if explicit_weights:
        n = len(df)
        df["w_energy"] = 1.0 / n
        df["w_forces"] = [np.zeros(len(a)) if f is None else np.ones(len(a)) / n
                          for a, f in zip(atoms, structures.forces)]
    return df


def fit_seed(request: TrainRequest) -> int:
    """The seed of this iteration's fit: config's ``seed`` plus the iteration."""
    return request.config.pacemaker.seed + request.iteration


def write_pacemaker_files(folder: Path, request: TrainRequest, data: TrainingData, potential,
                          reference_energy) -> None:
    """train.pckl.gzip, test.pckl.gzip and input.yaml (seeded by :func:`fit_seed`, the iteration in the
    potential's metadata) in the iteration folder."""
    settings = request.config.pacemaker
    # pacemaker joins train and test before weighting: both carry explicit weights or neither does
    explicit = bool(data.train.energy_only.any()) or bool(data.test is not None and data.test.energy_only.any())
    structures_dataframe(data.train, data.train_names, explicit, settings.cutoff).to_pickle(
        folder / "train.pckl.gzip", compression="gzip", protocol=4)
    test_file = None
    if data.test is not None:
        structures_dataframe(data.test, data.test_names, explicit, settings.cutoff).to_pickle(
            folder / "test.pckl.gzip", compression="gzip", protocol=4)
        test_file = "test.pckl.gzip"
    pacemaker_input = build_input(settings, potential=potential, train_file="train.pckl.gzip", test_file=test_file,
                                  seed=fit_seed(request), reference_energy=reference_energy)
    pacemaker_input["metadata"]["pace_worker_iteration"] = str(request.iteration)
    (folder / "input.yaml").write_text(yaml.safe_dump(pacemaker_input, sort_keys=False))


def inherited_reference_energy(settings: PacemakerSettings, potential, starts: StartingPotentials):
    """Keep the energy scale of the potential a fit starts from, unless config sets one explicitly."""
    start_file = Path(potential) if isinstance(potential, str) else starts.initial
    if start_file is not None and "reference_energy" not in settings.data.model_fields_set:
        inherited = potentials.reference_energy(start_file)
        if inherited is not None:
            return inherited
    return settings.data.reference_energy


def write_active_set(yaml_path: Path, asi_path: Path, structures: LabelledStructures, config: WorkerConfig) -> dict:
    """The new potential's .asi over its training structures; returns what the metrics report."""
    start = time.perf_counter()
    options = config.train
    info: dict = {"gamma_tolerance": options.active_set_gamma_tolerance}
    try:
        active = activeset.compute_active_set(yaml_path, structures.atoms,
                                              gamma_tolerance=options.active_set_gamma_tolerance,
                                              maxvol_iters=options.maxvol_iters)
        active.save(asi_path)
        gamma_max = active.gamma_max_of_source
        if gamma_max is None:  # built by batches: the projections were not kept
            gamma_max = float(activeset.structure_gammas(yaml_path, active, structures.atoms).max())
        info.update(written=True, train_gamma_max=gamma_max, regularized=active.regularized,
                    shape={el: list(m.shape) for el, m in active.inverse.items()},
                    rank={el: int(np.linalg.matrix_rank(m)) for el, m in active.inverse.items()})
    except activeset.ActiveSetUnavailable as exc:
        log.warning("no active set for the new potential: %s; output_potential.asi is removed", exc)
        asi_path.unlink(missing_ok=True)
        info.update(written=False, reason=str(exc))
    info["wall_time_s"] = time.perf_counter() - start
    return info


def published_errors(potential_yaml: Path, asi: Optional[Path], data: TrainingData, request: TrainRequest) -> dict:
    """Train and test errors of the potential as published (with its core repulsion), computed
    exactly as ``validate`` computes them; where pairs sit inside the core repulsion."""
    executor = ChunkExecutor.from_meta(request.meta, False)
    result: dict = {"train": None, "test": None, "core_repulsion": {}}
    for name, structures in (("train", data.train), ("test", data.test)):
        if structures is None or not len(structures):
            continue
        summary = evaluate_potential(potential_yaml, asi, potential_yaml, structures, executor,
                                     request.config.validate_).summary
        result[name] = {**headline_errors(summary), "gamma_max": summary["gamma"]["max"] if summary["gamma"] else None}
        result["core_repulsion"][name] = summary["core_repulsion"]
    return result


def previous_potential_gamma(starts: StartingPotentials, asi: Optional[Path], data: TrainingData) -> Optional[dict]:
    """How extrapolative the new training data were for the previous potential (``--asi``)."""
    if asi is None:
        return None
    g = activeset.optional_gammas(starts.previous, Path(asi), data.train.atoms)
    return {"potential": str(starts.previous), "asi": str(asi), "gamma_max": float(g.max()),
            "n_structures": int(len(g)), "n_gamma_above_1": int((g > 1).sum()), "n_gamma_above_5": int((g > 5).sum())}


def _file_info(path: Optional[Path]) -> Optional[dict]:
    if path is None:
        return None
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": file_sha256(path)}


# ----------------------------------------------------------------------------- the command
def train(request: TrainRequest) -> TrainResult:
    """Fit, compute .yace/.asi/metrics, and publish them atomically. See the module docstring."""
    t_start = time.perf_counter()
    if not 0 <= request.iteration <= MAX_ITERATION:
        raise InputError(f"--iteration {request.iteration}: must be a whole number from 0 to {MAX_ITERATION}")
    dataset_path = check_readable_file(request.dataset, "dataset", "check the path given to --dataset")
    output_dir = Path(request.output_dir or request.meta.output_dir or dataset_path.resolve().parent)
    work_root = Path(request.meta.work_dir) if request.meta.work_dir else output_dir / "iterations"
    for folder_path, what in ((output_dir, "output folder"), (work_root, "iterations folder")):
        if folder_path.exists() and not folder_path.is_dir():
            raise InputError(f"{what} '{folder_path}' is a file; give a folder (--output-dir or meta_config)")
        check_replaceable(folder_path / OUTPUT_STEM, what)
    # what the fit publishes at its end must be replaceable now: a 1-hour fit is not thrown away
    # for a permission problem that was there at second 0
    budgeted = request.config.pacemaker.fit.max_time is not None and request.config.train.schedule == "auto"
    for path in [*published_files(output_dir).values(), output_dir / LOCK_NAME,
                 *([output_dir / ERROR_VS_TIME_PNG] if budgeted else [])]:
        check_replaceable(path, "output")
    with contextlib.ExitStack() as stack:
        return _train(request, output_dir, work_root, t_start, stack)


@dataclass
class _Staged:
    """The new potential's files in the iteration folder, and what was measured on them."""

    files: dict[str, Optional[Path]]  # yaml, yace, asi, test_set, metrics (None: not written)
    active_set: dict
    n_functions: int
    errors: dict                      # published_errors()


def _train(request: TrainRequest, output_dir: Path, work_root: Path, t_start: float,
           stack: contextlib.ExitStack) -> TrainResult:
    settings = request.config.pacemaker
    # everything that can be wrong with the input is found before the fit starts
    starts = resolve_starting_potentials(request)
    data = load_training_data(request, starts)
    mode, potential = plan_start(settings, starts, data)

    # one train per output folder from here on (the inputs are checked; now folders are touched)
    stack.enter_context(exclusive_folder(output_dir))
    dataset_sha = file_sha256(Path(request.dataset))
    folder = open_iteration_folder(request, work_root, starts, dataset_sha)
    if folder.resume_from is not None:
        mode, potential = f"resume ({mode})", str(folder.resume_from.resolve())
    reference = inherited_reference_energy(settings, potential, starts)
    budget_fit: Optional[BudgetFit] = None
    fit_run: Optional[FitRun] = None
    scheduled = schedule_section(request, mode, starts, data)
    with disk_full_is_one_line(folder.path):  # the iteration folder: pacemaker's input, its run, the new files
        if scheduled is not None:
            mode = scheduled.mode
            budget_fit = run_schedule(request, data, scheduled, reference,
                                      BudgetClock(t_start, settings.fit.max_time), folder.path)
        else:
            write_pacemaker_files(folder.path, request, data, potential, reference)
            fit_run = run_pacemaker(folder.path, request.meta, args=["input.yaml"], maxiter=settings.fit.maxiter,
                                    show_progress=request.show_progress, max_time=settings.fit.max_time)
        staged = stage_outputs(folder.path, data, request)
    fitted = _Fitted(request=request, starts=starts, data=data, folder=folder, dataset_sha=dataset_sha, mode=mode,
                     fit_run=fit_run, budget_fit=budget_fit, staged=staged)
    return publish_fit(fitted, output_dir, t_start)


def open_iteration_folder(request: TrainRequest, work_root: Path, starts: StartingPotentials,
                          dataset_sha: str) -> IterationFolder:
    """``iter_NNN`` of this request, fingerprinted by its inputs (a rerun with the same inputs resumes)."""
    return IterationFolder.open(work_root / f"iter_{request.iteration:03d}", fingerprint({
        "dataset": dataset_sha, "config": request.config.model_dump(mode="json"), "iteration": request.iteration,
        "initial": file_sha256(starts.initial) if starts.initial else None,
        "potential_yaml": file_sha256(starts.given_basis) if starts.given_basis else None}),
        interim_problem=potentials.b_basis_problem)


def publish_fit(fitted: _Fitted, output_dir: Path, t_start: float) -> TrainResult:
    """Stage the metrics (and the budget schedule's picture) next to the new potential, then rename
    everything into place (.asi before .yaml, .yace last); a source of None removes a stale file (an
    .asi of an older potential, a test set that no longer applies)."""
    staged, folder, budget_fit = fitted.staged, fitted.folder, fitted.budget_fit
    final = published_files(output_dir)
    outputs = {k: (final[k] if staged.files[k] is not None else None) for k in final}
    if budget_fit is not None:
        staged.files["error_vs_time"] = folder.path / ERROR_VS_TIME_PNG
        final = {"error_vs_time": output_dir / ERROR_VS_TIME_PNG, **final}  # before the .yace, which goes last
        outputs["error_vs_time"] = final["error_vs_time"]
    metrics = train_metrics(fitted, outputs, t_start)
    if budget_fit is not None:
        max_time = fitted.request.config.pacemaker.fit.max_time
        with disk_full_is_one_line(folder.path):
            error_vs_time(staged.files["error_vs_time"],
                          error_points(budget_fit.record, staged.errors["test"], metrics.wall_time_s),
                          max_time, f"train iteration {metrics.iteration}: linear ACE within {max_time:g} s")
    result = train_result(metrics, output_dir, folder.final)
    write_json_atomic(staged.files["metrics"], result.metrics)
    publish({final[k]: staged.files[k] for k in final})
    folder.commit()
    return result


#: the budget schedule's picture: validation and test errors against wall time
ERROR_VS_TIME_PNG = "train_error_vs_time.png"


@dataclass
class ScheduledStart:
    """How a budgeted fit starts: its mode, the basis section, the potential a warm start re-solves."""

    mode: str
    section: dict
    start: Optional[Path] = None


def run_schedule(request: TrainRequest, data: TrainingData, scheduled: ScheduledStart, reference, clock: BudgetClock,
                 folder: Path) -> BudgetFit:
    """The budget schedule (:mod:`pace_worker.commands.train_schedule`) on this request's data: the
    validation split is held out of the training structures; the test set is only reported."""
    settings = request.config.pacemaker
    data.validation_index = validation_split(data.train.atoms, request.config.train.validation_size,
                                             settings.seed)[1]
    fit_set, validation = data.fit_and_validation()
    kappa = explicit_kappa(request.config)
    problem = LinearProblem(section=scheduled.section, fit=fit_set, validation=validation, test=data.test, reference=reference,
                            row_weight=energy_row_weight(kappa, len(fit_set), fit_set.n_atoms),
                            max_functions=configured_functions(settings),
                            start_functions=potentials.functions_per_element(scheduled.start) if scheduled.start else None)
    run = RunSettings(workers=request.meta.workers, show_progress=request.show_progress,
                      repulsion=settings.fit.repulsion)
    return fit_within_budget(problem, kappa is not None, clock, folder, run)


def configured_functions(settings: PacemakerSettings) -> Optional[int]:
    """potential.functions.number_of_functions_per_element when config.yaml sets it (a user's basis is kept:
    the schedule chooses sizes up to it, never beyond)."""
    functions = getattr(settings.potential, "functions", None)
    value = functions.get("number_of_functions_per_element") if isinstance(functions, dict) else None
    return int(value) if value else None


def explicit_kappa(config: WorkerConfig) -> Optional[float]:
    """fit.loss.kappa when config.yaml sets it (the schedule otherwise balances energies and forces itself)."""
    loss = config.pacemaker.fit.loss
    return loss.kappa if "kappa" in loss.model_fields_set else None


def schedule_section(request: TrainRequest, mode: str, starts: StartingPotentials,
                     data: TrainingData) -> Optional[ScheduledStart]:
    """How the budget schedule starts this run (:class:`ScheduledStart`), or None (pacemaker alone).

    It runs with ``fit.max_time`` and ``train.schedule: auto`` for a basis to build (config's section or
    the default rule's, not a potential file) whose first density is linear. A warm start from a
    potential that the schedule's linear stage made re-solves the linear fit on the grown data (the
    exact optimum, which continuing it with an optimizer could only approach), keeping the starting
    potential's reference energies; any other starting potential is continued by pacemaker."""
    settings = request.config.pacemaker
    if settings.fit.max_time is None or request.config.train.schedule != "auto" or mode.startswith("resume") \
            or starts.given_basis is not None or starts.config_basis is not None:
        return None
    elements, _ = starts.elements(settings, data.dataset)
    per_element = data.train.atoms_per_element()
    section = potential_section(settings, elements, {el: max(per_element.get(el, 0), 1) for el in elements})
    if not has_linear_first_density(section):
        return None
    if starts.initial is None:
        return ScheduledStart("cold (budget schedule)", section)
    if fit_kind(starts.initial) == "linear":
        log.info("the starting potential %s is a linear fit of the budget schedule: it is re-solved on the %d "
                 "training structures (its reference energies kept)", starts.initial, len(data.train))
        return ScheduledStart("warm (linear re-solve)", section, starts.initial)
    return None


def published_files(output_dir: Path) -> dict[str, Path]:
    """Where each output is published, in the order of publishing (.asi before .yaml, .yace last)."""
    return {k: output_dir / name for k, name in (("asi", f"{OUTPUT_STEM}.asi"), ("yaml", f"{OUTPUT_STEM}.yaml"),
                                                 ("test_set", "test_set.xyz"), ("metrics", "train_metrics.json"),
                                                 ("yace", f"{OUTPUT_STEM}.yace"))}


def stage_outputs(folder: Path, data: TrainingData, request: TrainRequest) -> _Staged:
    """Active set, .yace, test set and errors, all in the iteration folder first; the .yaml names
    its active set (sha256 in its metadata) before the .yace is made from it."""
    files: dict[str, Optional[Path]] = {k: folder / f"{OUTPUT_STEM}.{k}" for k in ("yaml", "yace", "asi")}
    active_info = write_active_set(files["yaml"], files["asi"], data.train, request.config)
    if not active_info["written"]:
        files["asi"] = None
    activeset.record_active_set(files["yaml"], files["asi"])
    n_functions = potentials.write_yace(files["yaml"], files["yace"])
    errors = published_errors(files["yaml"], files["asi"], data, request)
    files["test_set"] = None
    if data.test is not None:
        files["test_set"] = folder / "test_set.xyz"
        test_atoms = data.test.labelled_atoms()
        for atoms, origin in zip(test_atoms, data.test_origin):
            atoms.info["dataset_index"] = int(origin)
        write_extxyz_atomic(files["test_set"], test_atoms)
    files["metrics"] = folder / "train_metrics.json"
    return _Staged(files, active_info, n_functions, errors)


# ----------------------------------------------------------------------------- metrics and result
#: ``errors_of`` in train_metrics.json
ERRORS_OF = ("the published potential (output_potential.yaml/.yace with its core repulsion), evaluated as validate "
             "does; 'in_fit' holds pacemaker's own numbers of the fit")
#: ``energy_scale`` in train_metrics.json
ENERGY_SCALE = "energy_corrected (reference energies removed; see potential metadata reference_energy)"
#: ``device`` in train_metrics.json when no pacemaker ran
LINEAR_STAGE_DEVICE = {"used": "cpu", "note": "no pacemaker run: the linear stage runs pyace on the CPU"}


@dataclass
class _Fitted:
    """One iteration's fit, staged in its folder: what its metrics and result are made of."""

    request: TrainRequest
    starts: StartingPotentials
    data: TrainingData
    folder: IterationFolder
    dataset_sha: str
    mode: str
    fit_run: Optional[FitRun]        # pacemaker's run (None: the budget schedule fitted)
    budget_fit: Optional[BudgetFit]  # the budget schedule's fit (None: pacemaker fitted)
    staged: _Staged


@dataclass
class FitSummary:
    """``fit`` in train_metrics.json: how the published potential was fitted."""

    optimizer: str
    maxiter: int
    iterations: int                 # optimizer steps (0 for the budget schedule)
    initial_loss: Optional[float]   # pacemaker's loss (None: no pacemaker run)
    final_loss: Optional[float]
    n_functions: int
    wall_time_s: float
    max_time_s: Optional[float]     # fit.max_time
    stopped_by: str                 # optimizer, max_time or schedule
    budget_stop: Optional[dict]     # pacemaker's budget_stop.json when the budget ended its fit
    published: str                  # pacemaker, or the kind of fit the schedule published


@dataclass
class SplitSummary:
    """``split`` in train_metrics.json: how the dataset was divided."""

    rule: str
    test_size: float
    n_train: int
    n_test: int
    n_validation: int
    validation_size: Optional[float]  # None: no validation split (pacemaker fits)


@dataclass
class TrainMetrics:
    """``train_metrics.json`` (schema :data:`METRICS_SCHEMA`): one field per top-level key, in the
    file's order; :meth:`as_json` is the file's content."""

    schema: str
    iteration: int
    seed: int
    fit_seed: int
    mode: str
    train: Optional[dict]             # published_errors() of the training set (None: no structures)
    test: Optional[dict]              # ... and of the test set
    errors_of: str
    core_repulsion: dict
    in_fit: dict                      # "train"/"test": pacemaker's own errors (None: no prediction file)
    energy_scale: str
    fit: FitSummary
    schedule: Optional[ScheduleRecord]  # the budget schedule's choices (None: pacemaker fitted)
    split: SplitSummary
    active_set: dict                  # write_active_set()
    previous_potential_gamma: Optional[dict]
    device: dict
    versions: dict
    inputs: dict
    iteration_dir: str
    outputs: dict[str, Optional[Path]]  # where each output is published (None: not written)
    wall_time_s: float

    def as_json(self) -> dict:
        """The file's content: the fields in order, records as dicts, paths as strings."""
        content = {f.name: getattr(self, f.name) for f in fields(self)}
        content.update(fit=asdict(self.fit), split=asdict(self.split),
                       schedule=self.schedule.as_dict() if self.schedule is not None else None,
                       outputs={k: (str(v) if v is not None else None) for k, v in self.outputs.items()})
        return content


def train_metrics(fitted: _Fitted, outputs: dict[str, Optional[Path]], t_start: float) -> TrainMetrics:
    """The metrics of a staged fit; their wall time runs from ``t_start`` to when they are complete."""
    request, data, staged = fitted.request, fitted.data, fitted.staged
    settings = request.config.pacemaker
    return TrainMetrics(
        schema=METRICS_SCHEMA, iteration=request.iteration, seed=settings.seed, fit_seed=fit_seed(request),
        mode=fitted.mode, train=staged.errors["train"], test=staged.errors["test"], errors_of=ERRORS_OF,
        core_repulsion=staged.errors["core_repulsion"],
        in_fit={name: errors_from_prediction_file(fitted.folder.path / f"{name}_pred.pckl.gzip",
                                                  data.energy_only_names) for name in ("train", "test")},
        energy_scale=ENERGY_SCALE, fit=fit_summary(fitted),
        schedule=fitted.budget_fit.record if fitted.budget_fit is not None else None,
        split=split_summary(request, data), active_set=staged.active_set,
        previous_potential_gamma=previous_potential_gamma(fitted.starts, request.asi, data),
        device=fitted.fit_run.device if fitted.fit_run is not None else dict(LINEAR_STAGE_DEVICE),
        versions=stack_versions(), inputs=input_files(fitted), iteration_dir=str(fitted.folder.final.resolve()),
        outputs=outputs, wall_time_s=time.perf_counter() - t_start)


def fit_summary(fitted: _Fitted) -> FitSummary:
    settings = fitted.request.config.pacemaker
    run, budget_fit = fitted.fit_run, fitted.budget_fit
    losses = loss_history(fitted.folder.path / "metrics.txt") if run is not None else []
    if run is not None:
        stopped_by = "max_time" if run.budget_stop else "optimizer"
        wall_time_s = run.wall_time_s
    else:
        stopped_by = "schedule"
        wall_time_s = sum(stage.wall_time_s for stage in budget_fit.record.stages)
    return FitSummary(
        optimizer=settings.fit.optimizer, maxiter=settings.fit.maxiter,
        iterations=max(run.iterations if run is not None else 0, len(losses) - 1),
        initial_loss=losses[0] if losses else None, final_loss=losses[-1] if losses else None,
        n_functions=fitted.staged.n_functions, wall_time_s=wall_time_s, max_time_s=settings.fit.max_time,
        stopped_by=stopped_by, budget_stop=run.budget_stop if run is not None else None,
        published=budget_fit.kind if budget_fit is not None else "pacemaker")


def split_summary(request: TrainRequest, data: TrainingData) -> SplitSummary:
    return SplitSummary(
        rule=data.split_rule, test_size=request.config.pacemaker.data.test_size, n_train=len(data.train),
        n_test=len(data.test) if data.test is not None else 0, n_validation=len(data.validation_index),
        validation_size=request.config.train.validation_size if data.validation_index else None)


def input_files(fitted: _Fitted) -> dict:
    """``inputs`` in train_metrics.json: the dataset, config and starting files, with their sha256."""
    request, dataset = fitted.request, fitted.data.dataset
    return {
        "dataset": {"path": str(Path(request.dataset).resolve()), "sha256": fitted.dataset_sha,
                    "n_structures": len(dataset), "n_atoms": dataset.n_atoms},
        "config": _file_info(request.config.source),
        "initial_potential": _file_info(fitted.starts.initial),
        "potential_yaml": _file_info(fitted.starts.given_basis),
        "asi": _file_info(request.asi),
    }


def train_result(metrics: TrainMetrics, output_dir: Path, iteration_dir: Path) -> TrainResult:
    """The command's result, from the typed metrics (its ``metrics`` is their JSON)."""
    fit, active = metrics.fit, metrics.active_set
    return TrainResult(
        output_dir=output_dir, iteration_dir=iteration_dir, files=dict(metrics.outputs), metrics=metrics.as_json(),
        iteration=metrics.iteration, mode=metrics.mode, n_functions=fit.n_functions,
        optimizer_steps=fit.iterations, wall_time_s=metrics.wall_time_s, device=metrics.device.get("used", "?"),
        max_time_s=fit.max_time_s if fit.budget_stop else None,
        errors={name: ErrorLine.of(errors) if errors else None
                for name, errors in (("train", metrics.train), ("test", metrics.test))},
        active_set_gamma_max=active["train_gamma_max"] if active.get("written") else None,
        active_set_missing=None if active.get("written") else active.get("reason"),
        schedule=schedule_sentence(metrics.schedule) if metrics.schedule is not None else None)


def schedule_sentence(schedule: ScheduleRecord) -> str:
    """What the budget schedule chose, for the terminal (``train_metrics.json`` has the details)."""
    stage = schedule.stages[-1]
    val = stage.validation
    chosen = (f"validation F RMSE {val.force_rmse_mev_per_A:.1f} meV/Å, E RMSE "
              f"{val.energy_rmse_mev_per_atom:.2f} meV/atom on {schedule.validation_structures} structures"
              if val is not None and val.force_rmse_mev_per_A is not None else "no validation structures")
    return (f"budget schedule: {schedule.published} ACE, {stage.functions_per_element} functions per element "
            f"of sizes {stage.details['sizes']} ({chosen}), fitted in {stage.wall_time_s:.0f} s of the "
            f"{schedule.max_time_s:g} s budget")
