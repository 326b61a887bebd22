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
from typing import Optional, Sequence

import numpy as np
from ase import Atoms

from pace_worker.ace import potentials
from pace_worker.ace.predictions import Prediction, load_potential, predict
from pace_worker.algorithms.error_metrics import ErrorMetrics, Labels, MetricOptions, compute_metrics
from pace_worker.config import ValidateOptions
from pace_worker.files.structures import LabelledStructures, shortest_distance_and_core
from pace_worker.parallel.executor import ChunkExecutor

CORE_NOTE = ("structures with a pair closer than r_in are evaluated inside the potential's core repulsion "
             "(ZBL below the shortest distance of its training data)")
SHOWN_INSIDE = 20  # structures inside the core repulsion named in the JSON


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


@dataclass(frozen=True)
class CoreRepulsion:
    """Which structures have a pair of atoms closer than its ``r_in`` (inside the potential's core
    repulsion), and each structure's shortest interatomic distance."""

    r_in: Optional[dict[str, float]]  # Å per element pair "A-B"; None: the potential gives none
    shortest_distance: np.ndarray     # Å per structure; NaN: no neighbour within reach
    pairs_inside_r_in: np.ndarray     # per structure

    @classmethod
    def of(cls, structures: Sequence[Atoms], cutoffs: dict[tuple[str, str], float]) -> "CoreRepulsion":
        core = [shortest_distance_and_core(a, cutoffs) for a in structures]
        return cls({f"{a}-{b}": r for (a, b), r in sorted(cutoffs.items()) if a <= b} if cutoffs else None,
                   np.array([np.nan if d is None else d for d, _ in core]),
                   np.array([n for _, n in core], dtype=int))

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
    groups: list[str]
    group_key: str
    ref_energy: np.ndarray   # reference energies on the potential's scale
    predictions: list[Prediction]
    reference: object        # the potential's reference_energy metadata (or None)
    energy_scale: str
    evaluation_s: float

    @property
    def summary(self) -> dict:
        """The errors as the metrics JSON gives them (:meth:`ErrorMetrics.to_json` and ``core_repulsion``)."""
        return {**self.metrics.to_json(), "core_repulsion": self.core_repulsion.to_json()}

    @property
    def atoms_per_s(self) -> Optional[float]:
        return self.metrics.n_atoms / self.evaluation_s if self.evaluation_s > 0 else None


def reference_energies(structures: LabelledStructures, b_basis: Optional[Path]) -> tuple[np.ndarray, object, str]:
    """``(energies on the potential's scale, the potential's reference_energy or None, which scale)``."""
    reference = potentials.reference_energy(b_basis) if b_basis is not None else None
    if reference is None:
        return structures.energies, None, "as given (the potential has no reference_energy metadata)"
    return (corrected_energies(structures, reference), reference,
            "energy_corrected (reference_energy of the potential removed)")


def evaluate_potential(evaluated: Path, asi: Optional[Path], b_basis: Optional[Path],
                       structures: LabelledStructures, executor: ChunkExecutor,
                       options: Optional[ValidateOptions] = None) -> Evaluation:
    """Energies, forces (and γ with ``asi``) of ``evaluated`` on ``structures``, compared with their
    labels on the potential's energy scale (see the module docstring). ``train`` reports its
    published potential's errors with this same function."""
    options = options or ValidateOptions()
    ref_energy, reference, scale = reference_energies(structures, b_basis)
    t_eval = time.perf_counter()
    load_potential(str(evaluated), str(asi) if asi else None)  # forked workers inherit it
    predictions = predict(evaluated, structures.atoms, asi=asi, executor=executor)
    eval_s = time.perf_counter() - t_eval

    groups = [str(a.info.get(options.group_by, "all")) for a in structures.atoms]
    metrics = compute_metrics(
        [a.get_chemical_symbols() for a in structures.atoms], groups,
        Labels(ref_energy, structures.forces, structures.stresses or [None] * len(structures)),
        Labels(np.array([p.energy for p in predictions]), [p.forces for p in predictions],
               [p.stress for p in predictions]),
        gamma_max=np.array([p.gamma.max() for p in predictions]) if asi is not None else None,
        options=MetricOptions(options.low_window_ev_per_atom, options.n_worst))
    cutoffs = potentials.inner_cutoffs(b_basis) if b_basis is not None else {}
    return Evaluation(metrics=metrics, core_repulsion=CoreRepulsion.of(structures.atoms, cutoffs), groups=groups,
                      group_key=options.group_by, ref_energy=np.asarray(ref_energy), predictions=predictions,
                      reference=reference, energy_scale=scale, evaluation_s=eval_s)
