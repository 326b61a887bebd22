"""``validate``: errors of a potential on a test set, as JSON, a per-structure CSV and PNG plots.

:func:`validate` is the pure core (a :class:`ValidateRequest` in, a :class:`ValidateResult`
out); the CLI only parses flags and prints.

Which test set (the first that exists wins)
-------------------------------------------
1. ``--test-set T``;
2. ``validate.test_set`` in config.yaml (relative to the config file);
3. the test set ``train`` recorded in ``train_metrics.json`` next to the potential;
4. ``test_set.xyz`` next to the potential;
otherwise an error that lists what was tried.

Which active set (for γ)
------------------------
``--asi A`` > ``validate.asi`` in config.yaml > the ``.asi`` next to the potential's B-basis
``.yaml``. γ needs the B-basis: for a ``.yace`` the ``.yaml`` beside it is used. When γ is
computed, energies and forces come from that ``.yaml`` too (the ``.yace`` is its exact
conversion); without an active set the given file itself is evaluated.

Energy scale
------------
ACE predicts pacemaker's ``energy_corrected`` (reference energies removed). The reference
energies stored in the potential's metadata (``reference_energy``) are removed from the test
set's energies with pyace's own ``compute_corrected_energy``; without them energies are
compared as given. The JSON says which (``energy_scale``).
"""
from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from pace_worker.ace import activeset
from pace_worker.ace import potentials
from pace_worker.files.atomic_io import OutputGroup, companion_path, write_json
from pace_worker.config import MetaConfig, ValidateOptions, WorkerConfig
from pace_worker.errors import InputError, first_line
from pace_worker.ace.predictions import load_potential, predict
from pace_worker.parallel.executor import ChunkExecutor
from pace_worker.files.output_paths import check_outputs
from pace_worker.files.structures import (LabelledStructures, file_sha256, read_labelled_structures,
                                    shortest_distance_and_core)
from pace_worker.algorithms.error_metrics import compute_metrics

log = logging.getLogger(__name__)

SCHEMA = "pace-worker/validation_metrics/1"
SAME_POSITION_A = 0.1  # two atoms closer than this (Å) are taken as one point counted twice


@dataclass
class ValidateRequest:
    potential: Path
    output: Path
    test_set: Optional[Path] = None
    asi: Optional[Path] = None
    config: WorkerConfig = field(default_factory=WorkerConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    show_progress: Optional[bool] = None
    plots: bool = True


@dataclass
class ValidateResult:
    metrics: dict
    files: dict[str, Path]


# ----------------------------------------------------------------------------- finding inputs
def find_test_set(request: ValidateRequest) -> tuple[Path, str]:
    """The test set and the rule that found it (see the module docstring)."""
    if request.test_set is not None:
        return Path(request.test_set), "--test-set"
    tried = []
    configured = request.config.validate_.test_set
    if configured:
        path = request.config.resolve_path(configured)
        if path.is_file():
            return path, "config validate.test_set"
        tried.append(f"config validate.test_set ({path})")
    folder = Path(request.potential).parent
    metrics_file = folder / "train_metrics.json"
    if metrics_file.is_file():
        try:
            recorded = json.loads(metrics_file.read_text()).get("outputs", {}).get("test_set")
        except (json.JSONDecodeError, AttributeError):
            recorded = None
        if recorded and Path(recorded).is_file():
            return Path(recorded), "train_metrics.json"
        tried.append(f"{metrics_file} (records {recorded or 'no test set'})")
    else:
        tried.append(f"{metrics_file} (missing)")
    default = folder / "test_set.xyz"
    if default.is_file():
        return default, "test_set.xyz next to the potential"
    tried.append(f"{default} (missing)")
    raise InputError(f"no test set found for potential '{request.potential}'; tried --test-set (not given), "
                     f"{'; '.join(tried)}; give one with --test-set")


def resolve_potential(path: Path):
    """``(given, b_basis_yaml_or_None, elements)``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"potential '{path}' does not exist; give a .yace or .yaml written by train")
    if path.suffix not in (".yace", ".yaml", ".yml"):
        raise InputError(f"potential '{path}': expected a .yace or a .yaml (B-basis) file")
    try:
        if path.suffix == ".yace":
            potentials.check_yace(path)
        else:
            potentials.resolve_b_basis(path, "potential")
        elements = list(load_potential(str(path)).basis.elements_name)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"potential '{path}' cannot be loaded by pyace ({first_line(exc)}); is the file complete?")
    b_basis = path if path.suffix in (".yaml", ".yml") else path.with_suffix(".yaml")
    return path, (b_basis if b_basis.is_file() else None), elements


def find_active_set(request: ValidateRequest, b_basis: Optional[Path]) -> Optional[Path]:
    explicit = request.asi or request.config.validate_.asi
    if explicit:
        asi = request.config.resolve_path(explicit) if not request.asi else Path(request.asi)
        if b_basis is None:
            raise InputError(f"active set '{asi}' needs the B-basis .yaml of potential '{request.potential}' "
                             "(γ cannot be computed from a .yace alone); put the .yaml next to it")
    elif b_basis is not None and b_basis.with_suffix(".asi").is_file():
        asi = b_basis.with_suffix(".asi")
    else:
        return None
    activeset.load_active_set(asi, b_basis)  # shapes must match the potential
    return asi


def read_test_set(path: Path, request: ValidateRequest, elements: list[str]) -> LabelledStructures:
    opts = request.config.pacemaker.data
    # hot MD test structures may have close pairs (the core repulsion acts there); atoms at one
    # point are never a structure
    structures = read_labelled_structures(path, opts.energy_key, opts.forces_key, opts.stress_key,
                                          min_distance=SAME_POSITION_A)
    if structures.energy_only.all():
        raise InputError(f"test set '{path}' has no forces in any structure (structure 0 has none); validation "
                         "needs forces: name their key with data.forces_key in config.yaml")
    allowed = set(elements)
    for i, atoms in enumerate(structures.atoms):
        missing = sorted(set(atoms.get_chemical_symbols()) - allowed)
        if missing:
            raise InputError(f"test set '{path}', structure {i}: element(s) {', '.join(missing)} not in the "
                             f"potential (elements {sorted(allowed)}); remove those structures")
    return structures


def corrected_energies(structures: LabelledStructures, reference) -> np.ndarray:
    """Test energies on the potential's scale, with pyace's own reference-energy correction."""
    import pandas as pd
    from pyace.process_df import compute_corrected_energy

    df = pd.DataFrame({"ase_atoms": structures.atoms, "energy": structures.energies,
                       "NUMBER_OF_ATOMS": [len(a) for a in structures.atoms]})
    if isinstance(reference, str):
        compute_corrected_energy(df, calculator_name=reference)
    else:
        compute_corrected_energy(df, esa_dict=reference)
    return df["energy_corrected"].to_numpy(dtype=float)


@dataclass
class Evaluation:
    """The errors of a potential on labelled structures, as ``validate`` reports them."""

    summary: dict            # energy/force/stress errors, per element/group, worst, γ, core repulsion
    table: dict              # per structure (arrays): errors, γ, shortest distance, pairs inside r_in
    groups: list[str]
    group_key: str
    ref_energy: np.ndarray   # reference energies on the potential's scale
    predictions: list
    reference: object        # the potential's reference_energy metadata (or None)
    energy_scale: str
    evaluation_s: float


def evaluate_potential(evaluated: Path, asi: Optional[Path], b_basis: Optional[Path],
                       structures: LabelledStructures, executor: ChunkExecutor,
                       options: Optional[ValidateOptions] = None) -> Evaluation:
    """Energies, forces (and γ with ``asi``) of ``evaluated`` on ``structures``, compared with their
    labels on the potential's energy scale (see the module docstring). ``train`` reports its
    published potential's errors with this same function."""
    options = options or ValidateOptions()
    reference = potentials.reference_energy(b_basis) if b_basis is not None else None
    if reference is not None:
        ref_energy = corrected_energies(structures, reference)
        scale = "energy_corrected (reference_energy of the potential removed)"
    else:
        ref_energy, scale = structures.energies, "as given (the potential has no reference_energy metadata)"
    t_eval = time.perf_counter()
    load_potential(str(evaluated), str(asi) if asi else None)  # forked workers inherit it
    predictions = predict(evaluated, structures.atoms, asi=asi, executor=executor)
    eval_s = time.perf_counter() - t_eval

    groups = [str(a.info.get(options.group_by, "all")) for a in structures.atoms]
    gamma_max = np.array([p.gamma.max() for p in predictions]) if asi is not None else None
    summary, table = compute_metrics(
        symbols=[a.get_chemical_symbols() for a in structures.atoms], groups=groups, ref_energy=ref_energy,
        pred_energy=np.array([p.energy for p in predictions]), ref_forces=structures.forces,
        pred_forces=[p.forces for p in predictions],
        ref_stress=structures.stresses or [None] * len(structures), pred_stress=[p.stress for p in predictions],
        gamma_max=gamma_max, low_window=options.low_window_ev_per_atom, n_worst=options.n_worst)
    cutoffs = potentials.inner_cutoffs(b_basis) if b_basis is not None else {}
    core = [shortest_distance_and_core(a, cutoffs) for a in structures.atoms]
    table["shortest_distance_A"] = np.array([np.nan if d is None else d for d, _ in core])
    table["pairs_inside_r_in"] = np.array([n for _, n in core], dtype=int)
    inside = np.flatnonzero(table["pairs_inside_r_in"] > 0)
    summary["core_repulsion"] = {
        "r_in_A": {f"{a}-{b}": r for (a, b), r in sorted(cutoffs.items()) if a <= b} if cutoffs else None,
        "n_structures_inside_r_in": int(len(inside)),
        "structures_inside_r_in": [int(i) for i in inside[:20]],
        "note": "structures with a pair closer than r_in are evaluated inside the potential's core repulsion "
                "(ZBL below the shortest distance of its training data)" if len(inside) else None}
    return Evaluation(summary=summary, table=table, groups=groups, group_key=options.group_by,
                      ref_energy=np.asarray(ref_energy), predictions=predictions, reference=reference,
                      energy_scale=scale, evaluation_s=eval_s)


# ----------------------------------------------------------------------------- the command
def validate(request: ValidateRequest) -> ValidateResult:
    t_start = time.perf_counter()
    output = Path(request.output)
    files = output_files(output, request.plots)
    potential = Path(request.potential)
    given, b_basis, elements = resolve_potential(potential)  # a broken potential is named first
    test_path, rule = find_test_set(request)
    explicit_asi = request.asi or (request.config.resolve_path(request.config.validate_.asi)
                                   if request.config.validate_.asi else None)
    check_outputs({("--output" if key == "json" else key.replace("_", " ")): p for key, p in files.items()},
                  {"potential": potential, "potential's B-basis": potential.with_suffix(".yaml"),
                   "potential's .yace": potential.with_suffix(".yace"),
                   "active set": explicit_asi or potential.with_suffix(".asi"), "test set": test_path,
                   "train metrics": potential.parent / "train_metrics.json" if rule == "train_metrics.json" else None,
                   "config": request.config.source, "meta_config": request.meta.source})
    asi = find_active_set(request, b_basis)
    structures = read_test_set(test_path, request, elements)
    evaluated = b_basis if asi is not None else given

    executor = ChunkExecutor.from_meta(request.meta, request.show_progress)
    result = evaluate_potential(evaluated, asi, b_basis, structures, executor, request.config.validate_)
    group_key, summary, table, groups = result.group_key, result.summary, result.table, result.groups

    if not request.plots:
        files = {k: v for k, v in files.items() if k in ("json", "csv")}
    if table["gamma_max"] is None:
        files.pop("force_error_vs_gamma", None)
    eval_s, reference, scale = result.evaluation_s, result.reference, result.energy_scale
    group = OutputGroup()  # the JSON, CSV and plots are published together, or none of them
    with group:
        write_csv(group.stage(files["csv"]), table, groups, group_key)
        if request.plots:
            make_plots({k: group.stage(v) for k, v in files.items() if k not in ("json", "csv")}, structures,
                       result.ref_energy, result.predictions, summary, table, groups, given.name)

        n_atoms = structures.n_atoms
        metrics = {
            "schema": SCHEMA,
            "potential": {"given": str(given.resolve()), "evaluated": str(Path(evaluated).resolve()),
                          "b_basis": str(b_basis.resolve()) if b_basis else None,
                          "asi": str(Path(asi).resolve()) if asi else None, "sha256": file_sha256(given),
                          "elements": elements},
            "test_set": {"path": str(test_path.resolve()), "found_by": rule, "sha256": file_sha256(test_path),
                         "n_structures": len(structures), "n_atoms": n_atoms, "group_by": group_key},
            "energy_scale": scale,
            "reference_energy": reference,
            **summary,
            "timing": {"wall_time_s": time.perf_counter() - t_start, "evaluation_s": eval_s,
                       "atoms_per_s": n_atoms / eval_s if eval_s > 0 else None,
                       "workers": executor.workers, "chunk_size": executor.chunk_size,
                       "scheduler": executor.scheduler},
            "outputs": {k: str(v.resolve()) for k, v in files.items()},
        }
        write_json(group.stage(output), metrics)
        group.publish()
    return ValidateResult(metrics=metrics, files=files)


def write_csv(path: Path, table: dict, groups: list[str], group_key: str) -> None:
    columns = ["index", "n_atoms", group_key, "energy_error_mev_per_atom", "force_rmse_mev_per_A",
               "force_max_error_mev_per_A", "gamma_max", "shortest_distance_A", "pairs_inside_r_in"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i in range(len(groups)):
            gamma = "" if table["gamma_max"] is None else f"{table['gamma_max'][i]:.6g}"
            writer.writerow([i, int(table["n_atoms"][i]), groups[i], f"{table['energy_error_mev_per_atom'][i]:.6g}",
                             f"{table['force_rmse_mev_per_A'][i]:.6g}", f"{table['force_max_error_mev_per_A'][i]:.6g}",
                             gamma, f"{table['shortest_distance_A'][i]:.4g}", int(table["pairs_inside_r_in"][i])])


def output_files(output: Path, plots: bool) -> dict[str, Path]:
    """The metrics JSON and the files written next to it (the γ plot only when an active set is found)."""
    files = {"json": output, "csv": companion_path(output, "_per_structure.csv")}
    if plots:
        files.update(energy_parity=companion_path(output, "_energy_parity.png"),
                     force_parity=companion_path(output, "_force_parity.png"),
                     force_error_vs_gamma=companion_path(output, "_force_error_vs_gamma.png"))
    return files


def make_plots(files: dict, structures, ref_energy, predictions, summary, table, groups, title) -> None:
    """The parity plots (and γ plot) into the paths ``files`` gives (the staged names)."""
    from pace_worker import plots

    n = np.array([len(a) for a in structures.atoms])
    plots.energy_parity(files["energy_parity"], np.asarray(ref_energy) / n,
                        np.array([p.energy for p in predictions]) / n, groups, summary["energy_rmse_mev_per_atom"],
                        title)
    with_f = [i for i, f in enumerate(structures.forces) if f is not None]
    symbols = np.concatenate([structures.atoms[i].get_chemical_symbols() for i in with_f])
    plots.force_parity(files["force_parity"], np.concatenate([structures.forces[i] for i in with_f]),
                       np.concatenate([predictions[i].forces for i in with_f]), symbols, summary["per_element"],
                       title)
    if table["gamma_max"] is not None:
        plots.error_vs_gamma(files["force_error_vs_gamma"], table["gamma_max"][with_f],
                             table["force_rmse_mev_per_A"][with_f], summary["gamma"]["spearman_gamma_vs_force_rmse"],
                             title)
