"""Error metrics of predictions against reference labels (pure numpy, no I/O).

Conventions (the same as pacemaker's metrics):

* energies per atom, on pacemaker's ``energy_corrected`` scale, in meV/atom;
* forces per Cartesian component in meV/Å (``force_norm_rmse`` uses the error vector's length);
* stresses per Voigt component in GPa;
* R² = 1 − SS_res / SS_tot of per-atom energies and of force components;
* the "low" subset: structures whose reference energy per atom is within ``low_window`` eV/atom
  (default 1) of the lowest one, as in pacemaker's "low" columns.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Sequence

import numpy as np

EV_PER_A3_TO_GPA = 160.21766208


def _rmse(x: np.ndarray) -> Optional[float]:
    return float(np.sqrt(np.mean(x ** 2))) if x.size else None


def _mae(x: np.ndarray) -> Optional[float]:
    return float(np.mean(np.abs(x))) if x.size else None


def _max(x: np.ndarray) -> Optional[float]:
    return float(np.max(np.abs(x))) if x.size else None


def _r2(pred: np.ndarray, ref: np.ndarray) -> Optional[float]:
    if ref.size < 2:
        return None
    ss_tot = float(np.sum((ref - ref.mean()) ** 2))
    return float(1 - np.sum((pred - ref) ** 2) / ss_tot) if ss_tot > 0 else None


@np.errstate(over="ignore", invalid="ignore")  # an absurd label gives inf, written as null (see atomic_io)
def energy_force_errors(de_per_atom: np.ndarray, dforces: np.ndarray) -> dict:
    """RMSE/MAE/max of energy errors (eV/atom) and force component errors (eV/Å, shape [n, 3])."""
    de = np.asarray(de_per_atom) * 1e3
    df = np.asarray(dforces).reshape(-1, 3) * 1e3
    return {
        "n_structures": int(len(de)),
        "energy_rmse_mev_per_atom": _rmse(de), "energy_mae_mev_per_atom": _mae(de),
        "energy_max_abs_mev_per_atom": _max(de),
        "force_rmse_mev_per_A": _rmse(df), "force_mae_mev_per_A": _mae(df), "force_max_abs_mev_per_A": _max(df),
        "force_norm_rmse_mev_per_A": _rmse(np.linalg.norm(df, axis=1)) if df.size else None,
    }


#: the energy and force error keys of a summary, in the order :func:`energy_force_errors` gives them
ERROR_KEYS: tuple[str, ...] = tuple(k for k in energy_force_errors(np.zeros(0), np.zeros((0, 3)))
                                    if k != "n_structures")
COUNT_KEYS = ("n_structures", "n_atoms", "n_energy_only")


@dataclass(frozen=True)
class ErrorLine:
    """The errors of one set of structures, as one line of a table."""

    n_structures: int
    energy_rmse_mev_per_atom: Optional[float]
    energy_mae_mev_per_atom: Optional[float]
    force_rmse_mev_per_A: Optional[float]
    force_mae_mev_per_A: Optional[float]

    @classmethod
    def of(cls, errors: dict) -> "ErrorLine":
        """From a summary or any :func:`energy_force_errors` dict."""
        return cls(**{f.name: errors[f.name] for f in fields(cls)})


def headline_errors(summary: dict) -> dict:
    """The counts and the energy/force errors of a :func:`compute_metrics` summary, without the
    breakdowns (per element, group, worst, γ)."""
    return {k: summary[k] for k in COUNT_KEYS + ERROR_KEYS}


def per_structure_table(n_atoms: np.ndarray, de_per_atom: np.ndarray, dforces: Sequence[Optional[np.ndarray]],
                        gamma_max: Optional[np.ndarray]) -> dict:
    """Per-structure columns: energy error (meV/atom), force RMSE and max |ΔF| (meV/Å; NaN for an
    energy-only structure), max γ."""
    nan = float("nan")
    return {
        "n_atoms": np.asarray(n_atoms, dtype=int),
        "energy_error_mev_per_atom": np.asarray(de_per_atom) * 1e3,
        "force_rmse_mev_per_A": np.array([nan if d is None else 1e3 * np.sqrt(np.mean(d ** 2)) for d in dforces]),
        "force_max_error_mev_per_A": np.array([nan if d is None else 1e3 * np.max(np.linalg.norm(d, axis=1))
                                               for d in dforces]),
        "gamma_max": gamma_max,
    }


def gamma_statistics(gamma_max: np.ndarray, force_rmse: np.ndarray) -> dict:
    """Distribution of per-structure max γ and its rank correlation with the force error."""
    from scipy.stats import spearmanr

    g = np.asarray(gamma_max, dtype=float)
    has_f = np.isfinite(force_rmse)
    gf, f = g[has_f], np.asarray(force_rmse)[has_f]
    rho = spearmanr(gf, f).statistic if len(gf) > 2 and np.ptp(gf) > 0 and np.ptp(f) > 0 else None
    return {
        "max": float(g.max()), "mean": float(g.mean()),
        "percentiles": {str(p): float(np.percentile(g, p)) for p in (50, 90, 99)},
        "fraction_above_1": float(np.mean(g > 1)), "fraction_above_5": float(np.mean(g > 5)),
        "spearman_gamma_vs_force_rmse": None if rho is None else float(rho),
    }


@np.errstate(over="ignore", invalid="ignore")
def compute_metrics(*, symbols: Sequence[Sequence[str]], groups: Sequence[str], ref_energy: np.ndarray,
                    pred_energy: np.ndarray, ref_forces: Sequence[np.ndarray], pred_forces: Sequence[np.ndarray],
                    ref_stress: Sequence[Optional[np.ndarray]], pred_stress: Sequence[Optional[np.ndarray]],
                    gamma_max: Optional[np.ndarray] = None, low_window: float = 1.0, n_worst: int = 10):
    """All metrics of one test set; returns ``(summary, per_structure)``.

    ``ref_energy`` must already be on the potential's energy scale (eV, total per structure).
    A ``ref_forces`` entry of ``None`` marks an energy-only structure: it counts in the energy
    metrics only.
    """
    n_atoms = np.array([len(s) for s in symbols])
    ref_epa = np.asarray(ref_energy) / n_atoms
    pred_epa = np.asarray(pred_energy) / n_atoms
    de = pred_epa - ref_epa
    dforces = [None if r is None else np.asarray(p) - np.asarray(r) for p, r in zip(pred_forces, ref_forces)]
    with_f = [i for i, d in enumerate(dforces) if d is not None]
    all_df = np.concatenate([dforces[i] for i in with_f]) if with_f else np.zeros((0, 3))
    all_ref_f = np.concatenate([np.asarray(ref_forces[i]) for i in with_f]).ravel() if with_f else np.zeros(0)
    all_pred_f = np.concatenate([np.asarray(pred_forces[i]) for i in with_f]).ravel() if with_f else np.zeros(0)

    summary = {"n_structures": int(len(n_atoms)), "n_atoms": int(n_atoms.sum()),
               "n_energy_only": int(len(n_atoms) - len(with_f))}
    summary.update({k: v for k, v in energy_force_errors(de, all_df).items() if k != "n_structures"})
    summary["energy_r2"] = _r2(pred_epa, ref_epa)
    summary["force_r2"] = _r2(all_pred_f, all_ref_f)

    stress_pairs = [(p, r) for p, r in zip(pred_stress, ref_stress) if p is not None and r is not None]
    summary["stress"] = None
    if stress_pairs:
        ds = np.array([(np.asarray(p).reshape(-1)[:6] - _voigt(r)) for p, r in stress_pairs]) * EV_PER_A3_TO_GPA
        summary["stress"] = {"n_structures": len(stress_pairs), "rmse_gpa": _rmse(ds), "mae_gpa": _mae(ds)}

    flat_symbols = (np.concatenate([np.asarray(symbols[i]) for i in with_f]) if with_f
                    else np.zeros(0, dtype=str))
    summary["per_element"] = {
        el: {"n_atoms": int(np.sum(flat_symbols == el)),
             "force_rmse_mev_per_A": _rmse(1e3 * all_df[flat_symbols == el]),
             "force_mae_mev_per_A": _mae(1e3 * all_df[flat_symbols == el])}
        for el in sorted(set(flat_symbols.tolist()))}

    groups = np.asarray(groups, dtype=object)
    atom_group = np.array([g for i in with_f for g in [groups[i]] * n_atoms[i]], dtype=object)
    summary["per_group"] = {}
    for g in sorted(set(groups.tolist()), key=str):
        mask = groups == g
        summary["per_group"][str(g)] = energy_force_errors(de[mask], all_df[atom_group == g])

    low = ref_epa <= ref_epa.min() + low_window
    atom_low = np.array([flag for i in with_f for flag in [low[i]] * n_atoms[i]], dtype=bool)
    summary["low"] = {"window_ev_per_atom": low_window, **energy_force_errors(de[low], all_df[atom_low])}

    table = per_structure_table(n_atoms, de, dforces, gamma_max)
    order_e = np.argsort(-np.abs(table["energy_error_mev_per_atom"]), kind="stable")[:n_worst]
    order_f = [i for i in np.argsort(-np.nan_to_num(table["force_max_error_mev_per_A"], nan=-np.inf),
                                     kind="stable") if i in set(with_f)][:n_worst]
    summary["worst"] = {
        "by_energy": [{"index": int(i), "group": str(groups[i]),
                       "energy_error_mev_per_atom": float(table["energy_error_mev_per_atom"][i])} for i in order_e],
        "by_max_force": [{"index": int(i), "group": str(groups[i]),
                          "force_max_error_mev_per_A": float(table["force_max_error_mev_per_A"][i])}
                         for i in order_f],
    }
    summary["gamma"] = (gamma_statistics(gamma_max, table["force_rmse_mev_per_A"])
                        if gamma_max is not None else None)
    return summary, table


def _voigt(stress) -> np.ndarray:
    s = np.asarray(stress, dtype=float).reshape(-1)
    if s.size == 9:
        m = s.reshape(3, 3)
        return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])
    return s
