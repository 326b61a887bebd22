"""``validate``: errors of a potential on a test set, as JSON, a per-structure CSV and PNG plots.

:func:`validate` is the pure core (a :class:`ValidateRequest` in, a :class:`ValidateResult`
out); the CLI only parses flags and prints.

Which test set: ``--test-set T``, else ``validate.test_set`` in config.yaml (relative to the
config file) — either must name a file, or that is the error (never a fall-back) — else the
first that exists of the test set ``train`` recorded in ``train_metrics.json`` next to the
potential and ``test_set.xyz`` next to the potential; otherwise an error that lists what was
tried. Which active set (for γ): ``--asi A`` > ``validate.asi`` > the
``.asi`` next to the potential's B-basis ``.yaml``. Both rules live in
:mod:`pace_worker.files.discovery`.

γ needs the B-basis: for a ``.yace`` the ``.yaml`` beside it is used. When γ is computed,
energies and forces come from that ``.yaml`` too (the ``.yace`` is its exact conversion); without
an active set the given file itself is evaluated. The errors themselves (energy scale, metrics,
core repulsion) come from :mod:`pace_worker.ace.potential_errors`, which ``train`` uses too.
"""
from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
from ase.data import chemical_symbols

from pace_worker import plots
from pace_worker.ace import potentials
from pace_worker.ace.activeset import check_validate_active_set
from pace_worker.ace.labelled_evaluation import TestSetFile, check_in_potential
from pace_worker.ace.potential_errors import SHOWN_INSIDE, Evaluation, evaluate_potential
from pace_worker.algorithms.error_metrics import ErrorLine, GammaStatistics, PerStructureErrors
from pace_worker.config import MetaConfig, WorkerConfig
from pace_worker.errors import InputError
from pace_worker.files import discovery
from pace_worker.files.atomic_io import OutputGroup, companion_path, write_json
from pace_worker.files.output_paths import check_outputs
from pace_worker.files.structures import (
    FileSha256Meanwhile,
    LabelKeys,
    LabelledStructures,
    file_sha256,
    is_pickle,
    read_labelled_structures,
    readable_labelled_file,
)
from pace_worker.parallel.executor import ChunkExecutor

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
    metrics: dict                   # the JSON written to --output
    files: dict[str, Path]
    test_set: Path
    test_set_found_by: str
    n_structures: int
    n_atoms: int
    atoms_per_s: Optional[float]
    rows: list[tuple[str, ErrorLine]]  # all, per group, the low-energy window
    gamma: Optional[GammaStatistics]   # None without an active set
    n_inside_r_in: int              # structures with a pair inside the core repulsion
    structures_inside_r_in: list[int]  # the first 20 of them
    per_structure: PerStructureErrors  # errors and γ per test structure (the CSV's columns)


@dataclass
class _Inputs:
    """A validate request's files, found and checked."""

    given: Path
    b_basis: Optional[Path]
    elements: list[str]
    test_set: discovery.Found
    asi: Optional[Path]

    @property
    def evaluated(self) -> Path:
        """γ needs the B-basis, which then gives energies and forces too."""
        return self.b_basis if self.asi is not None else self.given


# ----------------------------------------------------------------------------- steps
def find_inputs(request: ValidateRequest, files: dict[str, Path]) -> _Inputs:
    """The potential (a broken one is named first), the test set and the active set; the outputs
    are checked not to be any of them."""
    potential = Path(request.potential)
    b_basis, elements = potentials.open_potential(potential)
    test_set = discovery.find_test_set(request.test_set, request.config, potential)
    asi_file = discovery.validate_active_set_file(request.asi, request.config, b_basis)
    explicit_asi = None if asi_file.by_default else asi_file.path
    check_outputs({("--output" if key == "json" else key.replace("_", " ")): p for key, p in files.items()},
                  {"potential": potential, "potential's B-basis": potential.with_suffix(".yaml"),
                   "potential's .yace": potential.with_suffix(".yace"),
                   "active set": explicit_asi or potential.with_suffix(".asi"), "test set": test_set.path,
                   "train metrics": potential.parent / "train_metrics.json"
                   if test_set.source == "train_metrics.json" else None,
                   "config": request.config.source, "meta_config": request.meta.source})
    asi = check_validate_active_set(asi_file, potential, b_basis)
    return _Inputs(potential, b_basis, elements, test_set, asi)


def test_set_of(found: discovery.Found, request: ValidateRequest,
                elements: list[str]) -> Union[TestSetFile, LabelledStructures]:
    """The test set as the workers read it: an extxyz file they parse and check chunk by chunk
    (each structure's labels and elements, as every reader of labelled data checks them); a
    pacemaker pickle is read and checked here first."""
    opts = request.config.pacemaker.data
    path = readable_labelled_file(found.path, "test set", found.source)
    keys = LabelKeys(opts.energy_key, opts.forces_key, opts.stress_key)
    # hot MD test structures may have close pairs (the core repulsion acts there); atoms at one
    # point are never a structure
    if not is_pickle(path):
        return TestSetFile(path, keys, min_distance=SAME_POSITION_A, elements=tuple(elements))
    structures = read_labelled_structures(path, min_distance=SAME_POSITION_A, what="test set", given_by=found.source,
                                          **asdict(keys))
    for i, atoms in enumerate(structures.atoms):
        check_in_potential(atoms, elements, f"test set '{structures.path}', structure {i}")
    return structures


def check_forces_given(path: Path, result: Evaluation) -> None:
    if not result.evaluated.errors.has_forces.any():
        raise InputError(f"test set '{path}' has no forces in any structure (structure 0 has none); validation "
                         "needs forces: name their key with data.forces_key in config.yaml")


# ----------------------------------------------------------------------------- the command
def validate(request: ValidateRequest) -> ValidateResult:
    t_start = time.perf_counter()
    files = output_files(Path(request.output), request.plots)
    inputs = find_inputs(request, files)
    test_set = test_set_of(inputs.test_set, request, inputs.elements)
    executor = ChunkExecutor.from_meta(request.meta, request.show_progress)
    # the test set's sha256 while the errors, CSV and plots are computed and written: ~0.3 s of 10⁵
    # structures off the single-threaded end of the command (started once the workers are done:
    # nothing forks any more)
    test_set_sha256 = FileSha256Meanwhile(inputs.test_set.path)
    result = evaluate_potential(inputs.evaluated, inputs.asi, inputs.b_basis, test_set, executor,
                                request.config.validate_, when_evaluated=test_set_sha256.start,
                                force_sample=request.plots)
    check_forces_given(test_set.path, result)
    if result.metrics.gamma is None:
        files.pop("force_error_vs_gamma", None)
    group = OutputGroup()  # the JSON, CSV and plots are published together, or none of them
    with group:
        write_csv(group.stage(files["csv"]), result)
        if request.plots:
            make_plots({k: group.stage(v) for k, v in files.items() if k not in ("json", "csv")}, result,
                       inputs.given.name)
        metrics = metrics_report(inputs, result, executor, files, time.perf_counter() - t_start,
                                 test_set_sha256.result())
        write_json(group.stage(files["json"]), metrics)
        group.publish()
    return validate_result(inputs.test_set, result, files, metrics)


def metrics_report(inputs: _Inputs, result: Evaluation, executor: ChunkExecutor, files: dict[str, Path],
                   wall_time_s: float, test_set_sha256: str) -> dict:
    """The metrics JSON (schema :data:`SCHEMA`)."""
    return {
        "schema": SCHEMA,
        "potential": {"given": str(inputs.given.resolve()), "evaluated": str(Path(inputs.evaluated).resolve()),
                      "b_basis": str(inputs.b_basis.resolve()) if inputs.b_basis else None,
                      "asi": str(Path(inputs.asi).resolve()) if inputs.asi else None,
                      "sha256": file_sha256(inputs.given), "elements": inputs.elements},
        "test_set": {"path": str(inputs.test_set.path.resolve()), "found_by": inputs.test_set.source,
                     "sha256": test_set_sha256, "n_structures": result.metrics.n_structures,
                     "n_atoms": result.metrics.n_atoms, "group_by": result.group_key},
        "energy_scale": result.energy_scale,
        "reference_energy": result.reference,
        **result.summary,
        "timing": {"wall_time_s": wall_time_s, "evaluation_s": result.evaluation_s,
                   "atoms_per_s": result.atoms_per_s, "workers": executor.workers,
                   "chunk_size": executor.chunk_size, "scheduler": executor.scheduler_address},
        "outputs": {k: str(v.resolve()) for k, v in files.items()},
    }


def validate_result(test_set: discovery.Found, result: Evaluation, files: dict[str, Path],
                    metrics: dict) -> ValidateResult:
    m = result.metrics
    rows = [("all", ErrorLine.from_errors(m.errors))]
    rows += [(g, ErrorLine.from_errors(e)) for g, e in m.per_group.items()]
    rows.append((f"low (<{m.low_window:g} eV)", ErrorLine.from_errors(m.low)))
    inside = result.core_repulsion.inside
    return ValidateResult(
        metrics=metrics, files=files, test_set=test_set.path.resolve(), test_set_found_by=test_set.source,
        n_structures=m.n_structures, n_atoms=m.n_atoms, atoms_per_s=result.atoms_per_s, rows=rows, gamma=m.gamma,
        n_inside_r_in=len(inside), structures_inside_r_in=inside[:SHOWN_INSIDE], per_structure=m.per_structure)


def write_csv(path: Path, result: Evaluation) -> None:
    """The per-structure CSV: errors, γ, shortest distance and pairs inside the core repulsion."""
    table, core = result.metrics.per_structure, result.core_repulsion
    columns = ["index", "n_atoms", result.group_key, "energy_error_mev_per_atom", "force_rmse_mev_per_A",
               "force_max_error_mev_per_A", "gamma_max", "shortest_distance_A", "pairs_inside_r_in"]

    def formatted(values: np.ndarray, spec: str) -> list[str]:  # Python floats format as numpy's do, faster
        return [format(x, spec) for x in values.tolist()]

    n = len(result.groups)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(range(n), table.n_atoms.tolist(), result.groups, formatted(table.energy_error, ".6g"),
                             formatted(table.force_rmse, ".6g"), formatted(table.force_max_error, ".6g"),
                             [""] * n if table.gamma_max is None else formatted(table.gamma_max, ".6g"),
                             formatted(core.shortest_distance, ".4g"), core.pairs_inside_r_in.tolist()))


def output_files(output: Path, plots: bool) -> dict[str, Path]:
    """The metrics JSON and the files written next to it (the γ plot only when an active set is found)."""
    files = {"json": output, "csv": companion_path(output, "_per_structure.csv")}
    if plots:
        files.update(energy_parity=companion_path(output, "_energy_parity.png"),
                     force_parity=companion_path(output, "_force_parity.png"),
                     force_error_vs_gamma=companion_path(output, "_force_error_vs_gamma.png"))
    return files


def make_plots(files: dict, result: Evaluation, title: str) -> None:
    """The parity plots (and γ plot) into the paths ``files`` gives (the staged names). The force
    parity plot draws the components of the evenly spaced structures whose forces came back
    (:class:`~pace_worker.ace.labelled_evaluation.ForceSample`: all of a test set of up to ~4,000
    structures), on axes that span every structure's."""
    metrics, evaluated = result.metrics, result.evaluated
    table, columns, sample = metrics.per_structure, evaluated.errors, evaluated.force_sample
    n = columns.n_atoms
    plots.energy_parity(files["energy_parity"], np.asarray(result.ref_energy) / n, columns.predicted_energy / n,
                        result.groups, metrics.errors.energy_rmse, title)
    with_f = np.flatnonzero(columns.has_forces)
    span = (float(np.min(columns.force_range[with_f, 0])), float(np.max(columns.force_range[with_f, 1])))
    plots.force_parity(files["force_parity"], sample.reference, sample.predicted,
                       np.array(chemical_symbols)[sample.numbers],
                       {el: e.to_json() for el, e in metrics.per_element.items()}, title, span=span,
                       structures=(len(sample), len(with_f)))
    if metrics.gamma is not None:
        plots.error_vs_gamma(files["force_error_vs_gamma"], table.gamma_max[with_f], table.force_rmse[with_f],
                             metrics.gamma.spearman_gamma_vs_force_rmse, title)
