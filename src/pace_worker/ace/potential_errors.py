"""The errors of a potential on labelled structures — what ``validate`` reports and what ``train``
reports for the potential it publishes, computed by the one function :func:`evaluate_potential`.

Energy scale: ACE predicts pacemaker's ``energy_corrected`` (reference energies removed). The
reference energies stored in the potential's metadata (``reference_energy``) are removed from
the structures' energies with pyace's own ``compute_corrected_energy``; without them energies are
compared as given (``energy_scale`` says which).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
from ase.data import chemical_symbols

from pace_worker.ace import potentials
from pace_worker.ace.labelled_evaluation import (
    EvaluatedStructures,
    EvaluationSettings,
    TestSetFile,
    evaluated_structures,
)
from pace_worker.algorithms.error_metrics import ErrorMetrics, MetricOptions, compute_metrics
from pace_worker.config import ValidateOptions
from pace_worker.files.structures import LabelledStructures
from pace_worker.parallel.executor import ChunkExecutor

CORE_NOTE = ("structures with a pair closer than r_in are evaluated inside the potential's core repulsion "
             "(ZBL below the shortest distance of its training data)")
SHOWN_INSIDE = 20  # structures inside the core repulsion named in the JSON
# what the reference-energy correction imports (~0.4 s), imported while the workers evaluate
CORRECTION_IMPORTS = ("pandas", "pyace.process_df")


def element_counts(numbers: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """``{symbol: atoms of that element per structure}`` of the elements the structures hold
    (``numbers``: each structure's atomic numbers)."""
    table = np.array([np.bincount(np.asarray(z, dtype=np.int64), minlength=len(chemical_symbols)) for z in numbers],
                     dtype=np.int64).reshape(len(numbers), len(chemical_symbols))
    return {chemical_symbols[z]: table[:, z] for z in np.flatnonzero(table.any(axis=0))}


def corrected_energies(counts: dict[str, np.ndarray], energies: np.ndarray, reference) -> np.ndarray:
    """Test energies on the potential's scale: pyace's reference-energy correction
    (``pyace.process_df.compute_corrected_energy``: minus each element's single-atom energy per
    atom, plus ``shift`` per atom), with its pandas operations on the same columns, so the same
    numbers bit for bit (``tests/test_validate.py`` compares them). pyace's function works the
    compositions out from an ASE structure per row; here they are given: ``counts``,
    ``{symbol: atoms of that element per structure}`` covering every atom (elements absent from
    all structures may be left out or be zeros), a few per cent of that time at 10⁴–10⁵ structures."""
    import pandas as pd
    from pyace.process_df import SINGLE_ATOM_ENERGY_DICT

    counts = {el: np.asarray(column, dtype=np.int64) for el, column in counts.items()}
    elements = sorted(el for el, column in counts.items() if column.any())  # pyace's order: sorted symbols
    df = pd.DataFrame({"energy": np.asarray(energies, dtype=float),
                       "NUMBER_OF_ATOMS": sum(counts.values(), np.zeros(len(energies), dtype=np.int64)),
                       **{"n_" + el: counts[el] for el in elements}})
    esa_dict = reference if not isinstance(reference, str) else {
        e: SINGLE_ATOM_ENERGY_DICT[reference][e] for e in elements}
    n_elements = ["n_" + e for e in elements]
    esa_array = np.array([esa_dict.get(e, 0) for e in elements])
    corr_mask = ~df["energy"].isna()
    df.loc[corr_mask, "energy_corrected"] = df.loc[corr_mask, "energy"] - (
        df.loc[corr_mask, n_elements] * esa_array).sum(axis=1)
    df["energy_corrected"] += esa_dict.get("shift", 0) * df["NUMBER_OF_ATOMS"]
    return df["energy_corrected"].to_numpy(dtype=float)


@dataclass(frozen=True)
class CoreRepulsion:
    """Which structures have a pair of atoms closer than its ``r_in`` (inside the potential's core
    repulsion), and each structure's shortest interatomic distance."""

    r_in: Optional[dict[str, float]]  # Å per element pair "A-B"; None: the potential gives none
    shortest_distance: np.ndarray     # Å per structure; NaN: no neighbour within reach
    pairs_inside_r_in: np.ndarray     # per structure

    @classmethod
    def of(cls, evaluated: EvaluatedStructures, cutoffs: dict[tuple[str, str], float]) -> "CoreRepulsion":
        """From the shortest distances and pairs the workers found (:mod:`pace_worker.ace.labelled_evaluation`)."""
        return cls({f"{a}-{b}": r for (a, b), r in sorted(cutoffs.items()) if a <= b} if cutoffs else None,
                   evaluated.shortest_distance, evaluated.pairs_inside_r_in.astype(int))

    @property
    def inside(self) -> list[int]:
        """The structures with a pair inside ``r_in``, in order."""
        return [int(i) for i in np.flatnonzero(self.pairs_inside_r_in > 0)]

    def to_json(self) -> dict:
        inside = self.inside
        return {"r_in_A": self.r_in, "n_structures_inside_r_in": len(inside),
                "structures_inside_r_in": inside[:SHOWN_INSIDE], "note": CORE_NOTE if inside else None}


@dataclass
class Evaluation:
    """The errors of a potential on labelled structures, as ``validate`` reports them."""

    metrics: ErrorMetrics    # energy/force/stress errors, per element/group, worst, γ, per structure
    core_repulsion: CoreRepulsion
    group_key: str
    evaluated: EvaluatedStructures  # per structure, as columns, in order; the force sample
    ref_energy: np.ndarray   # reference energies on the potential's scale
    reference: object        # the potential's reference_energy metadata (or None)
    energy_scale: str
    evaluation_s: float      # reading (of a test set's file), checking and evaluating

    @property
    def groups(self) -> list[str]:
        return self.evaluated.groups

    @property
    def summary(self) -> dict:
        """The errors as the metrics JSON gives them (:meth:`ErrorMetrics.to_json` and ``core_repulsion``)."""
        return {**self.metrics.to_json(), "core_repulsion": self.core_repulsion.to_json()}

    @property
    def atoms_per_s(self) -> Optional[float]:
        return self.metrics.n_atoms / self.evaluation_s if self.evaluation_s > 0 else None


def reference_energies(evaluated: EvaluatedStructures, reference) -> tuple[np.ndarray, object, str]:
    """``(energies on the potential's scale, the potential's reference_energy or None, which scale)``;
    ``reference``: the potential's reference_energy metadata (:func:`potentials.reference_energy`) or None."""
    energies = evaluated.energy
    if reference is None:
        return energies, None, "as given (the potential has no reference_energy metadata)"
    columns = evaluated.errors
    counts = {chemical_symbols[z]: columns.element_atoms[:, e] for e, z in enumerate(columns.elements)}
    return (corrected_energies(counts, energies, reference), reference,
            "energy_corrected (reference_energy of the potential removed)")


def evaluate_potential(evaluated: Path, asi: Optional[Path], b_basis: Optional[Path],
                       structures: Union[LabelledStructures, TestSetFile], executor: ChunkExecutor,
                       options: Optional[ValidateOptions] = None,
                       when_evaluated: Optional[Callable[[], None]] = None, force_sample: bool = False) -> Evaluation:
    """Energies, forces (and γ with ``asi``) of ``evaluated`` on ``structures`` (in memory, or a
    test set's file the workers read and check), compared with their labels on the potential's
    energy scale (see the module docstring). ``train`` reports its published potential's errors
    with this same function. ``when_evaluated``: called once the workers are done, before the
    errors are computed (nothing forks after it: ``validate`` starts hashing the test set there).
    ``force_sample``: the forces of evenly spaced structures come back too, for a parity plot
    (:class:`~pace_worker.ace.labelled_evaluation.ForceSample`)."""
    options = options or ValidateOptions()
    cutoffs = potentials.inner_cutoffs(b_basis) if b_basis is not None else {}
    t_eval = time.perf_counter()
    reference = potentials.reference_energy(b_basis) if b_basis is not None else None
    settings = EvaluationSettings(options.group_by, cutoffs, force_sample_every=int(force_sample))
    rows = evaluated_structures(evaluated, asi, structures, settings, executor,
                                meanwhile=CORRECTION_IMPORTS if reference is not None else ())
    eval_s = time.perf_counter() - t_eval
    if when_evaluated is not None:
        when_evaluated()
    ref_energy, reference, scale = reference_energies(rows, reference)
    metrics = compute_metrics(rows.errors, ref_energy, rows.groups,
                              gamma_max=rows.gamma_max if asi is not None else None,
                              options=MetricOptions(options.low_window_ev_per_atom, options.n_worst))
    return Evaluation(metrics=metrics, core_repulsion=CoreRepulsion.of(rows, cutoffs), group_key=options.group_by,
                      evaluated=rows, ref_energy=np.asarray(ref_energy), reference=reference, energy_scale=scale,
                      evaluation_s=eval_s)
