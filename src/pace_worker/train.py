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

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from pace_worker import activeset
from pace_worker.atomic_io import publish, write_json_atomic
from pace_worker.config import MetaConfig, WorkerConfig
from pace_worker.errors import InputError
from pace_worker.fit import run_pacemaker
from pace_worker.metrics import errors_from_prediction_file, loss_history
from pace_worker.pacemaker_input import build_input, potential_section
from pace_worker.split import stable_split
from pace_worker.stack import import_pyace, stack_versions
from pace_worker.structures import LabelledStructures, file_sha256, read_labelled_structures

log = logging.getLogger(__name__)

METRICS_SCHEMA = "pace-worker/train_metrics/1"
OUTPUT_STEM = "output_potential"
INTERIM_POTENTIAL = "interim_potential_0.yaml"


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
    files: dict[str, Optional[Path]]
    metrics: dict


# ----------------------------------------------------------------------------- small helpers
def resolve_b_basis(path: Path, flag: str) -> Path:
    """A B-basis .yaml for ``path``; a .yace is replaced by its sibling .yaml."""
    path = Path(path)
    if path.suffix == ".yace":
        sibling = path.with_suffix(".yaml")
        if not sibling.is_file():
            raise InputError(f"{flag} '{path}' is a .yace (C-tilde basis), which cannot be refitted, and no "
                             f"'{sibling.name}' lies next to it; give the B-basis .yaml of that potential")
        log.info("%s: using %s (the B-basis next to the .yace)", flag, sibling)
        path = sibling
    if not path.is_file():
        raise InputError(f"{flag} '{path}' does not exist; give the B-basis .yaml of a pacemaker potential")
    import_pyace()
    from pyace import BBasisConfiguration

    try:
        BBasisConfiguration(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{flag} '{path}' is not a readable pacemaker B-basis YAML ({first})")
    return path


def basis_elements(path: Path) -> list[str]:
    from pyace import ACEBBasisSet, BBasisConfiguration

    return list(ACEBBasisSet(BBasisConfiguration(str(path))).elements_name)


def count_functions(potential) -> int:
    """Total number of B-functions of a potential given as YAML path or pacemaker dict."""
    from pyace import BBasisConfiguration
    from pyace.basisextension import construct_bbasisconfiguration

    if isinstance(potential, (str, Path)):
        return BBasisConfiguration(str(potential)).total_number_of_functions
    spec = {k: v for k, v in potential.items() if k != "initial_potential"}
    try:
        return construct_bbasisconfiguration(spec).total_number_of_functions
    except Exception as exc:
        raise InputError(f"config potential section cannot be built by pacemaker ({exc}); check potential.*")


def potential_reference_energy(path: Path):
    from pyace import BBasisConfiguration

    meta = BBasisConfiguration(str(path)).metadata
    return json.loads(meta["reference_energy"]) if "reference_energy" in meta else None


def check_elements(structures: LabelledStructures, allowed: list[str], source: str) -> None:
    allowed_set = set(allowed)
    for i, atoms in enumerate(structures.atoms):
        missing = sorted(set(atoms.get_chemical_symbols()) - allowed_set)
        if missing:
            raise InputError(f"dataset '{structures.path}', structure {i}: element(s) {', '.join(missing)} not "
                             f"covered by {source} {sorted(allowed_set)}; add them to potential.elements in "
                             "config.yaml or remove those structures")


def structures_dataframe(structures: LabelledStructures, names: list[str], uniform_energy_only_weights: bool):
    """pacemaker's DataFrame: ase_atoms, energy, forces, name (+ weights when energy-only data)."""
    import pandas as pd

    atoms = []
    for a in structures.atoms:
        copy = a.copy()
        copy.calc = None
        atoms.append(copy)
    forces = [f if f is not None else np.zeros((len(a), 3)) for f, a in zip(structures.forces, atoms)]
    df = pd.DataFrame({"ase_atoms": atoms, "energy": structures.energies, "forces": forces, "name": names})
    if uniform_energy_only_weights:
        n = len(df)
        df["w_energy"] = 1.0 / n
        df["w_forces"] = [np.zeros(len(a)) if f is None else np.ones(len(a)) / n
                          for a, f in zip(atoms, structures.forces)]
    return df


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- the command
def train(request: TrainRequest) -> TrainResult:
    """Fit, compute .yace/.asi/metrics, and publish them atomically. See the module docstring."""
    t_start = time.perf_counter()
    if request.iteration < 0:
        raise InputError(f"--iteration {request.iteration}: must be 0 or a positive whole number")
    settings = request.config.pacemaker
    data_opts = settings.data
    dataset_path = Path(request.dataset)
    output_dir = Path(request.output_dir or request.meta.output_dir or dataset_path.resolve().parent)
    work_root = Path(request.meta.work_dir) if request.meta.work_dir else output_dir / "iterations"
    iter_dir = work_root / f"iter_{request.iteration:03d}"

    # 1. starting potentials and the previous active set
    initial = resolve_b_basis(request.initial_potential, "--initial-potential") if request.initial_potential \
        else None
    given_basis = resolve_b_basis(request.potential_yaml, "--potential-yaml") if request.potential_yaml else None
    previous = initial or given_basis
    if request.asi is not None:
        if previous is None:
            raise InputError(f"--asi '{request.asi}' is the active set of a previous potential; give that potential "
                             "with --initial-potential or --potential-yaml")
        activeset.load_active_set(Path(request.asi), previous)

    # 2. data: read and check everything before any fitting
    structures = read_labelled_structures(dataset_path, data_opts.energy_key, data_opts.forces_key,
                                          data_opts.stress_key, data_opts.min_distance)
    if given_basis is not None:
        elements, source = basis_elements(given_basis), f"--potential-yaml '{given_basis}' elements"
    elif initial is not None:
        elements, source = basis_elements(initial), f"--initial-potential '{initial}' elements"
    elif isinstance(settings.potential, str):
        elements, source = basis_elements(resolve_b_basis(Path(settings.potential), "config potential")), \
            "config potential elements"
    elif settings.potential is not None and settings.potential.elements:
        elements, source = list(settings.potential.elements), "config potential.elements"
    else:
        elements, source = structures.elements, "dataset elements"
    check_elements(structures, elements, source)

    if data_opts.test_filename:
        test_path = Path(data_opts.test_filename)
        if not test_path.is_absolute() and request.config.source is not None:
            test_path = Path(request.config.source).parent / test_path  # relative to config.yaml
        test_structures = read_labelled_structures(test_path, data_opts.energy_key,
                                                   data_opts.forces_key, data_opts.stress_key, data_opts.min_distance)
        check_elements(test_structures, elements, source)
        train_idx, test_idx = list(range(len(structures))), []
    else:
        train_idx, test_idx = stable_split(structures.atoms, data_opts.test_size, settings.seed,
                                           where=f"dataset '{dataset_path}'")
        test_structures = structures.subset(test_idx) if test_idx else None
    train_structures = structures.subset(train_idx)
    energy_only = train_structures.energy_only
    if energy_only.all():
        raise InputError(f"dataset '{dataset_path}': no training structure has forces; ACE needs forces")
    if energy_only.any() and settings.fit.weighting is not None:
        raise InputError(f"dataset '{dataset_path}' has {int(energy_only.sum())} energy-only structure(s) (first: "
                         f"{train_idx[int(np.argmax(energy_only))]}); they need the default uniform weighting: "
                         "remove fit.weighting from config.yaml or add forces")

    # 3. the basis to fit and where it starts from
    per_element = train_structures.atoms_per_element()
    per_element.update({el: 0 for el in elements if el not in per_element})
    target = str(given_basis) if given_basis else (
        str(settings.potential) if isinstance(settings.potential, str) else
        potential_section(settings, elements, {el: max(per_element[el], 1) for el in elements}))
    mode, potential = "cold", target
    if initial is not None:
        n_initial, n_target = count_functions(initial), count_functions(target)
        if n_target > n_initial:
            mode = "grow"
            potential = ({"filename": target} if isinstance(target, str) else dict(target))
            potential["initial_potential"] = str(initial.resolve())
            log.info("growing the basis of %s from %d to %d functions (one ladder step, coefficients kept)",
                     initial, n_initial, n_target)
        else:
            mode, potential = "warm", str(initial.resolve())
            if n_target < n_initial:
                log.info("the target basis (%d functions) is smaller than %s (%d): continuing with the latter",
                         n_target, initial, n_initial)
    elif given_basis is not None:
        mode, potential = "warm", str(given_basis.resolve())
    elif not isinstance(target, str):
        count_functions(target)  # builds the basis once: config errors surface before the fit

    # 4. the iteration folder: fresh, replaced, or resumed
    dataset_sha = file_sha256(dataset_path)
    inputs_fp = fingerprint({"dataset": dataset_sha, "config": request.config.model_dump(mode="json"),
                             "initial": file_sha256(initial) if initial else None,
                             "potential_yaml": file_sha256(given_basis) if given_basis else None,
                             "iteration": request.iteration})
    state_path = iter_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    resume = (state.get("status") == "running" and state.get("inputs") == inputs_fp
              and (iter_dir / INTERIM_POTENTIAL).is_file())
    if resume:
        interim = iter_dir / f"resume_from_{int(state.get('attempt', 1))}.yaml"
        shutil.copyfile(iter_dir / INTERIM_POTENTIAL, interim)
        potential, mode = str(interim.resolve()), f"resume ({mode})"
        log.info("iteration %d was interrupted: resuming from %s", request.iteration, interim.name)
        for name in ("output_potential.yaml", "metrics.txt", "test_metrics.txt"):
            (iter_dir / name).unlink(missing_ok=True)
    elif iter_dir.exists():
        log.info("replacing the archive of iteration %d (%s)", request.iteration, iter_dir)
        shutil.rmtree(iter_dir)
    iter_dir.mkdir(parents=True, exist_ok=True)
    attempt = int(state.get("attempt", 0)) + 1 if resume else 1
    state_path.write_text(json.dumps({"status": "running", "inputs": inputs_fp, "attempt": attempt}))

    # reference energies: keep the energy scale of the potential we start from
    reference_energy = data_opts.reference_energy
    start_file = Path(potential) if isinstance(potential, str) else initial
    if start_file is not None and "reference_energy" not in data_opts.model_fields_set:
        inherited = potential_reference_energy(start_file)
        if inherited is not None:
            reference_energy = inherited

    # 5. pacemaker's input files
    # pacemaker joins train and test before weighting: both carry explicit weights or neither does
    explicit_weights = bool(energy_only.any()) or bool(test_structures is not None and
                                                       test_structures.energy_only.any())
    train_names = [f"{dataset_path.name}#{i}" for i in train_idx]
    structures_dataframe(train_structures, train_names, explicit_weights).to_pickle(
        iter_dir / "train.pckl.gzip", compression="gzip", protocol=4)
    test_file = None
    if test_structures is not None and len(test_structures):
        test_names = ([f"{dataset_path.name}#{i}" for i in test_idx] if test_idx else
                      [f"{test_path.name}#{i}" for i in range(len(test_structures))])
        structures_dataframe(test_structures, test_names, explicit_weights).to_pickle(
            iter_dir / "test.pckl.gzip", compression="gzip", protocol=4)
        test_file = "test.pckl.gzip"
    fit_seed = settings.seed + request.iteration
    pacemaker_input = build_input(settings, potential=potential, train_file="train.pckl.gzip", test_file=test_file,
                                  seed=fit_seed, reference_energy=reference_energy,
                                  metadata={"pace_worker_iteration": str(request.iteration)})
    (iter_dir / "input.yaml").write_text(yaml.safe_dump(pacemaker_input, sort_keys=False))

    # 6. the fit
    fit_run = run_pacemaker(iter_dir, request.meta, args=["input.yaml"], maxiter=settings.fit.maxiter,
                            show_progress=request.show_progress)

    # 7. .yace, active set, test set, metrics: all in the iteration folder first
    import_pyace()
    from pyace import ACEBBasisSet, BBasisConfiguration

    out_yaml = iter_dir / f"{OUTPUT_STEM}.yaml"
    out_yace = iter_dir / f"{OUTPUT_STEM}.yace"
    out_asi = iter_dir / f"{OUTPUT_STEM}.asi"
    bconf = BBasisConfiguration(str(out_yaml))
    ACEBBasisSet(bconf).to_ACECTildeBasisSet().save_yaml(str(out_yace))

    t_as = time.perf_counter()
    active_info: dict = {"gamma_tolerance": request.config.train.active_set_gamma_tolerance}
    try:
        active = activeset.compute_active_set(out_yaml, train_structures.atoms,
                                              gamma_tolerance=request.config.train.active_set_gamma_tolerance,
                                              maxvol_iters=request.config.train.maxvol_iters)
        active.save(out_asi)
        train_gamma = activeset.structure_gammas(out_yaml, active, train_structures.atoms)
        active_info.update(written=True, train_gamma_max=float(train_gamma.max()),
                           shape={el: list(m.shape) for el, m in active.inverse.items()})
    except activeset.ActiveSetUnavailable as exc:
        log.warning("no active set for the new potential: %s; output_potential.asi is removed", exc)
        out_asi.unlink(missing_ok=True)
        active_info.update(written=False, reason=str(exc))
    active_info["wall_time_s"] = time.perf_counter() - t_as

    out_test = None
    if test_structures is not None and len(test_structures):
        from pace_worker.structures import write_extxyz_atomic

        out_test = iter_dir / "test_set.xyz"
        test_atoms = test_structures.labelled_atoms()
        for k, atoms in enumerate(test_atoms):
            atoms.info["dataset_index"] = int(test_idx[k]) if test_idx else k
        write_extxyz_atomic(out_test, test_atoms)

    previous_gamma = None
    if request.asi is not None:
        g = activeset.optional_gammas(previous, Path(request.asi), train_structures.atoms)
        previous_gamma = {"potential": str(previous), "asi": str(request.asi), "gamma_max": float(g.max()),
                          "n_structures": int(len(g)), "n_gamma_above_1": int((g > 1).sum()),
                          "n_gamma_above_5": int((g > 5).sum())}

    losses = loss_history(iter_dir / "metrics.txt")
    energy_only_names = [n for n, e in zip(train_names, energy_only) if e]
    if test_file:
        energy_only_names += [n for n, e in zip(test_names, test_structures.energy_only) if e]
    metrics = {
        "schema": METRICS_SCHEMA,
        "iteration": request.iteration,
        "seed": settings.seed,
        "fit_seed": fit_seed,
        "mode": mode,
        "train": errors_from_prediction_file(iter_dir / "train_pred.pckl.gzip", energy_only_names),
        "test": errors_from_prediction_file(iter_dir / "test_pred.pckl.gzip", energy_only_names),
        "energy_scale": "energy_corrected (reference energies removed; see potential metadata reference_energy)",
        "fit": {
            "optimizer": settings.fit.optimizer,
            "maxiter": settings.fit.maxiter,
            "iterations": fit_run.iterations,
            "initial_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "n_functions": int(bconf.total_number_of_functions),
            "wall_time_s": fit_run.wall_time_s,
        },
        "split": {"rule": "test_filename" if data_opts.test_filename else "stable content hash",
                  "test_size": data_opts.test_size, "n_train": len(train_structures),
                  "n_test": len(test_structures) if test_structures is not None else 0},
        "active_set": active_info,
        "previous_potential_gamma": previous_gamma,
        "device": fit_run.device,
        "versions": stack_versions(),
        "inputs": {
            "dataset": {"path": str(dataset_path.resolve()), "sha256": dataset_sha,
                        "n_structures": len(structures), "n_atoms": structures.n_atoms},
            "config": _file_info(request.config.source),
            "initial_potential": _file_info(initial),
            "potential_yaml": _file_info(given_basis),
            "asi": _file_info(Path(request.asi) if request.asi else None),
        },
        "iteration_dir": str(iter_dir.resolve()),
    }
    files = {
        "asi": output_dir / f"{OUTPUT_STEM}.asi",
        "yaml": output_dir / f"{OUTPUT_STEM}.yaml",
        "test_set": output_dir / "test_set.xyz",
        "metrics": output_dir / "train_metrics.json",
        "yace": output_dir / f"{OUTPUT_STEM}.yace",
    }
    metrics["outputs"] = {k: (str(v) if (k != "asi" or active_info["written"]) and (k != "test_set" or out_test)
                              else None) for k, v in files.items()}
    metrics["wall_time_s"] = time.perf_counter() - t_start
    write_json_atomic(iter_dir / "train_metrics.json", metrics)

    # 8. publish: stage everything, then rename (.asi before .yaml, .yace last)
    publish({
        files["asi"]: out_asi if active_info["written"] else None,
        files["yaml"]: out_yaml,
        files["test_set"]: out_test,
        files["metrics"]: iter_dir / "train_metrics.json",
        files["yace"]: out_yace,
    })
    state_path.write_text(json.dumps({"status": "completed", "inputs": inputs_fp, "attempt": attempt}))
    return TrainResult(output_dir=output_dir, iteration_dir=iter_dir,
                       files={k: Path(v) if v else None for k, v in metrics["outputs"].items()}, metrics=metrics)


def _file_info(path: Optional[Path]) -> Optional[dict]:
    if path is None:
        return None
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": file_sha256(path)}
