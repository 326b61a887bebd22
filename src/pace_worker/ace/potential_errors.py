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
from typing import Optional

import numpy as np

from pace_worker.ace import potentials
from pace_worker.ace.predictions import load_potential, predict
from pace_worker.algorithms.error_metrics import compute_metrics
from pace_worker.config import ValidateOptions
from pace_worker.files.structures import LabelledStructures, shortest_distance_and_core
from pace_worker.parallel.executor import ChunkExecutor


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
