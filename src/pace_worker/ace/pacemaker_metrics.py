"""Error metrics of a fit, from pacemaker's own prediction files.

pacemaker writes ``train_pred.pckl.gzip`` / ``test_pred.pckl.gzip`` (reference
``energy_corrected`` and ``forces``, predicted ``energy_pred`` and ``forces_pred``) with the
final potential. Energies are compared per atom on pacemaker's ``energy_corrected`` scale
(reference energies removed); forces per Cartesian component. Structures whose ``name`` is in
``energy_only`` are left out of the force errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from pace_worker.algorithms.error_metrics import energy_force_errors


def error_summary(pred, energy_only: Iterable[str] = ()) -> dict:
    """RMSE/MAE/max of energy per atom (meV/atom) and force components (meV/Å) of pacemaker's
    prediction DataFrame (see :func:`pace_worker.algorithms.error_metrics.energy_force_errors`)."""
    skip = set(energy_only)
    n_atoms = pred["NUMBER_OF_ATOMS"].to_numpy(dtype=float)
    de = (pred["energy_pred"].to_numpy(dtype=float) - pred["energy_corrected"].to_numpy(dtype=float)) / n_atoms
    with_forces = ~pred["name"].isin(skip).to_numpy() if "name" in pred.columns else np.ones(len(pred), bool)
    dforces = [np.asarray(fp) - np.asarray(f) for fp, f, keep in
               zip(pred["forces_pred"], pred["forces"], with_forces) if keep]
    result = energy_force_errors(de, np.concatenate(dforces) if dforces else np.zeros((0, 3)))
    result.update(n_atoms=int(n_atoms.sum()), n_energy_only=int((~with_forces).sum()))
    return result


def errors_from_prediction_file(path: Path, energy_only: Iterable[str] = ()) -> Optional[dict]:
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return None
    return error_summary(pd.read_pickle(path, compression="gzip"), energy_only)


def loss_history(metrics_txt: Path) -> list[float]:
    """Training loss per optimizer iteration, from pacemaker's ``metrics.txt``."""
    path = Path(metrics_txt)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    if not lines:
        return []
    header = lines[0].split()
    column = header.index("loss")
    return [float(line.split()[column]) for line in lines[1:] if line.strip()]
