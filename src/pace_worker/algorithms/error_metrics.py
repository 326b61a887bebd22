"""Error metrics of predictions against reference labels (pure numpy, no I/O).

Conventions (the same as pacemaker's metrics):

* energies per atom, on pacemaker's ``energy_corrected`` scale, in meV/atom;
* forces per Cartesian component in meV/Å (``force_norm_rmse`` uses the error vector's length);
* stresses per Voigt component in GPa;
* R² = 1 − SS_res / SS_tot of per-atom energies and of force components;
* the "low" subset: structures whose reference energy per atom is within ``low_window`` eV/atom
  (default 1) of the lowest one, as in pacemaker's "low" columns.

:func:`compute_metrics` returns typed values (:class:`ErrorMetrics`) whose fields carry no units in
their names; their ``to_json()`` is the one place that names the JSON keys (units in the names).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from typing import Optional, Sequence

import numpy as np
from ase.data import chemical_symbols

EV_PER_A3_TO_GPA = 160.21766208


def _rmse(x: np.ndarray) -> Optional[float]:
    return float(np.sqrt(np.mean(x ** 2))) if x.size else None


def _mae(x: np.ndarray) -> Optional[float]:
    return float(np.mean(np.abs(x))) if x.size else None


def _mae_and_max_overwriting(x: np.ndarray) -> tuple[Optional[float], Optional[float]]:
    """``(_mae(x), max |x|)`` from one ``|x|``, made in place: ``x`` (a scratch array) is overwritten
    (at 10⁵ structures each array of all force components is 77 MB of new memory)."""
    if not x.size:
        return None, None
    magnitude = np.abs(x, out=x)
    return float(np.mean(magnitude)), float(np.max(magnitude))


def _r2(residual: np.ndarray, ref: np.ndarray) -> Optional[float]:
    """R² of predictions ``ref + residual`` (the residual given, not recomputed from a copy of the
    predictions)."""
    if ref.size < 2:
        return None
    deviation = ref - ref.mean()
    ss_tot = float(np.sum(np.square(deviation, out=deviation)))
    return float(1 - np.sum(residual ** 2) / ss_tot) if ss_tot > 0 else None


#: the JSON key (unit in the name) of each error of :class:`EnergyForceErrors`, in JSON order
ERROR_JSON_KEYS = {"energy_rmse": "energy_rmse_mev_per_atom", "energy_mae": "energy_mae_mev_per_atom",
                   "energy_max_abs": "energy_max_abs_mev_per_atom", "force_rmse": "force_rmse_mev_per_A",
                   "force_mae": "force_mae_mev_per_A", "force_max_abs": "force_max_abs_mev_per_A",
                   "force_norm_rmse": "force_norm_rmse_mev_per_A"}
ERROR_KEYS: tuple[str, ...] = tuple(ERROR_JSON_KEYS.values())
COUNT_KEYS = ("n_structures", "n_atoms", "n_energy_only")


@dataclass(frozen=True)
class EnergyForceErrors:
    """RMSE / MAE / max |error| of the energies per atom (meV/atom) and of the force components
    (meV/Å) of a set of structures; ``force_norm_rmse``: RMSE of the error vectors' lengths (meV/Å).
    ``None``: the set has no energy (no force)."""

    n_structures: int
    energy_rmse: Optional[float]
    energy_mae: Optional[float]
    energy_max_abs: Optional[float]
    force_rmse: Optional[float]
    force_mae: Optional[float]
    force_max_abs: Optional[float]
    force_norm_rmse: Optional[float]

    @classmethod
    @np.errstate(over="ignore", invalid="ignore")  # an absurd label gives inf, written as null (see atomic_io)
    def of(cls, de_per_atom: np.ndarray, dforces: np.ndarray) -> "EnergyForceErrors":
        """From energy errors (eV/atom) and force component errors (eV/Å, shape [n, 3]). The force
        errors take the steps of ``_rmse``, ``_mae``, ``max |ΔF|`` and ``np.linalg.norm(ΔF, axis=1)``
        on two arrays of all components instead of seven (at 10⁵ structures each is 77 MB of new
        memory; the same numbers, bit for bit)."""
        de = np.asarray(de_per_atom) * 1e3
        energy_rmse = _rmse(de)  # before de is overwritten
        energy = (energy_rmse, *_mae_and_max_overwriting(de))
        df = np.asarray(dforces).reshape(-1, 3) * 1e3
        if not df.size:
            return cls(int(len(de)), *energy, None, None, None, None)
        squared = df * df  # what df ** 2 computes, and the squares np.linalg.norm sums
        force_rmse = float(np.sqrt(np.mean(squared)))
        norms = np.sqrt(np.add.reduce(squared, axis=1))  # np.linalg.norm(df, axis=1)
        del squared
        return cls(int(len(de)), *energy, force_rmse, *_mae_and_max_overwriting(df), _rmse(norms))

    def errors_json(self) -> dict:
        """The errors under their JSON keys (:data:`ERROR_KEYS`), without the count."""
        return {key: getattr(self, name) for name, key in ERROR_JSON_KEYS.items()}

    def to_json(self) -> dict:
        return {"n_structures": self.n_structures, **self.errors_json()}


def energy_force_errors(de_per_atom: np.ndarray, dforces: np.ndarray) -> dict:
    """The JSON of :meth:`EnergyForceErrors.of`."""
    return EnergyForceErrors.of(de_per_atom, dforces).to_json()


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

    @classmethod
    def from_errors(cls, errors: EnergyForceErrors) -> "ErrorLine":
        return cls(errors.n_structures, errors.energy_rmse, errors.energy_mae, errors.force_rmse, errors.force_mae)


def headline_errors(summary: dict) -> dict:
    """The counts and the energy/force errors of an :meth:`ErrorMetrics.to_json` summary, without
    the breakdowns (per element, group, worst, γ)."""
    return {k: summary[k] for k in COUNT_KEYS + ERROR_KEYS}


@dataclass(frozen=True)
class Labels:
    """Labels of structures, in order: total energies (eV), forces (eV/Å, [n_atoms, 3]; ``None``
    marks an energy-only structure) and stresses (eV/Å³, 6 Voigt or 9 values; ``None``: none)."""

    energy: np.ndarray
    forces: Sequence[Optional[np.ndarray]]
    stress: Sequence[Optional[np.ndarray]]


@dataclass(frozen=True)
class MetricOptions:
    low_window: float = 1.0  # eV/atom above the lowest reference energy per atom: the "low" subset
    n_worst: int = 10        # structures in each list of the worst


@dataclass(frozen=True)
class StressErrors:
    """RMSE / MAE of stress components (GPa) of the structures with a reference and a predicted stress."""

    n_structures: int
    rmse: Optional[float]
    mae: Optional[float]

    @classmethod
    def of(cls, reference: Sequence[Optional[np.ndarray]],
           predicted: Sequence[Optional[np.ndarray]]) -> Optional["StressErrors"]:
        """None when no structure has both."""
        pairs = [(p, r) for p, r in zip(predicted, reference) if p is not None and r is not None]
        if not pairs:
            return None
        ds = np.array([(np.asarray(p).reshape(-1)[:6] - _voigt(r)) for p, r in pairs]) * EV_PER_A3_TO_GPA
        return cls(len(pairs), _rmse(ds), _mae(ds))

    def to_json(self) -> dict:
        return {"n_structures": self.n_structures, "rmse_gpa": self.rmse, "mae_gpa": self.mae}


@dataclass(frozen=True)
class ElementForceErrors:
    """RMSE / MAE of the force components (meV/Å) on the atoms of one element."""

    n_atoms: int
    force_rmse: Optional[float]
    force_mae: Optional[float]

    def to_json(self) -> dict:
        return {"n_atoms": self.n_atoms, "force_rmse_mev_per_A": self.force_rmse,
                "force_mae_mev_per_A": self.force_mae}


@dataclass(frozen=True)
class PerStructureErrors:
    """Per structure, in order: energy error (meV/atom), force RMSE and max |ΔF| (meV/Å; NaN for an
    energy-only structure), max γ (None without γ)."""

    n_atoms: np.ndarray
    energy_error: np.ndarray
    force_rmse: np.ndarray
    force_max_error: np.ndarray
    gamma_max: Optional[np.ndarray]

    @classmethod
    def of(cls, n_atoms: np.ndarray, de_per_atom: np.ndarray, dforces: Sequence[Optional[np.ndarray]],
           gamma_max: Optional[np.ndarray]) -> "PerStructureErrors":
        """Per structure ``1e3 · √mean(ΔF²)`` and ``1e3 · max |ΔF_atom|``, computed on stacks of
        structures of one shape (one array operation per stack instead of several per structure:
        0.8 → 0.1 s at 10⁵ structures); each structure's numbers are those of the same operations on
        it alone, bit for bit (the reductions run over the same contiguous values in the same order)."""
        force_rmse = np.full(len(dforces), np.nan)
        force_max_error = np.full(len(dforces), np.nan)
        for rows, stack in _stacks_of_one_shape(dforces):
            force_rmse[rows] = 1e3 * np.sqrt(np.mean(stack ** 2, axis=(1, 2)))
            force_max_error[rows] = 1e3 * np.max(np.linalg.norm(stack, axis=2), axis=1)
        return cls(np.asarray(n_atoms, dtype=int), np.asarray(de_per_atom) * 1e3, force_rmse, force_max_error,
                   gamma_max)


STACK_ROWS = 4096  # structures per stack (bounds the copy: 3 MB for 32-atom cells)


def _stacks_of_one_shape(arrays: Sequence[Optional[np.ndarray]]):
    """``(indices, stacked arrays)`` of the non-None ``arrays``, grouped by shape and dtype, at most
    :data:`STACK_ROWS` per stack."""
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        if a is not None:
            groups.setdefault((a.shape, a.dtype.str), []).append(i)
    for indices in groups.values():
        for start in range(0, len(indices), STACK_ROWS):
            rows = np.asarray(indices[start:start + STACK_ROWS])
            yield rows, np.stack([arrays[i] for i in rows])


@dataclass(frozen=True)
class WorstStructure:
    index: int
    group: str
    error: float  # energy error (meV/atom) or max |ΔF| (meV/Å), as the list says


@dataclass(frozen=True)
class WorstStructures:
    """The structures of largest |energy error| and of largest max |ΔF|, worst first."""

    by_energy: list[WorstStructure]
    by_max_force: list[WorstStructure]

    @classmethod
    def of(cls, table: PerStructureErrors, groups: np.ndarray, with_forces: list[int],
           n_worst: int) -> "WorstStructures":
        order_e = np.argsort(-np.abs(table.energy_error), kind="stable")[:n_worst]
        has_forces = np.zeros(len(table.force_max_error), dtype=bool)
        has_forces[np.asarray(with_forces, dtype=int)] = True
        by_force = np.argsort(-np.nan_to_num(table.force_max_error, nan=-np.inf), kind="stable")
        order_f = by_force[has_forces[by_force]][:n_worst]
        return cls([WorstStructure(int(i), str(groups[i]), float(table.energy_error[i])) for i in order_e],
                   [WorstStructure(int(i), str(groups[i]), float(table.force_max_error[i])) for i in order_f])

    def to_json(self) -> dict:
        return {"by_energy": [{"index": w.index, "group": w.group, "energy_error_mev_per_atom": w.error}
                              for w in self.by_energy],
                "by_max_force": [{"index": w.index, "group": w.group, "force_max_error_mev_per_A": w.error}
                                 for w in self.by_max_force]}


@dataclass(frozen=True)
class GammaStatistics:
    """Distribution of per-structure max γ and its rank correlation with the force error."""

    max: float
    mean: float
    percentiles: dict[str, float]  # "50", "90", "99"
    fraction_above_1: float
    fraction_above_5: float
    spearman_gamma_vs_force_rmse: Optional[float]  # None: too few structures with forces, or no spread

    @classmethod
    def of(cls, gamma_max: np.ndarray, force_rmse: np.ndarray) -> "GammaStatistics":
        g = np.asarray(gamma_max, dtype=float)
        has_f = np.isfinite(force_rmse)
        gf, f = g[has_f], np.asarray(force_rmse)[has_f]
        from scipy.stats import spearmanr  # here: scipy.stats is 0.25 s of every validate's start, needed only with γ

        rho = spearmanr(gf, f).statistic if len(gf) > 2 and np.ptp(gf) > 0 and np.ptp(f) > 0 else None
        return cls(float(g.max()), float(g.mean()), {str(p): float(np.percentile(g, p)) for p in (50, 90, 99)},
                   float(np.mean(g > 1)), float(np.mean(g > 5)), None if rho is None else float(rho))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ErrorMetrics:
    """All error metrics of one set of structures (units: the module docstring)."""

    n_atoms: int
    n_energy_only: int
    errors: EnergyForceErrors  # of all structures
    energy_r2: Optional[float]
    force_r2: Optional[float]
    stress: Optional[StressErrors]
    per_element: dict[str, ElementForceErrors]
    per_group: dict[str, EnergyForceErrors]
    low_window: float          # eV/atom
    low: EnergyForceErrors     # of the structures within ``low_window`` of the lowest energy per atom
    worst: WorstStructures
    gamma: Optional[GammaStatistics]
    per_structure: PerStructureErrors

    @property
    def n_structures(self) -> int:
        return self.errors.n_structures

    def to_json(self) -> dict:
        """The summary JSON (all but ``per_structure``), keys in their documented order."""
        return {"n_structures": self.n_structures, "n_atoms": self.n_atoms, "n_energy_only": self.n_energy_only,
                **self.errors.errors_json(), "energy_r2": self.energy_r2, "force_r2": self.force_r2,
                "stress": self.stress.to_json() if self.stress else None,
                "per_element": {el: e.to_json() for el, e in self.per_element.items()},
                "per_group": {g: e.to_json() for g, e in self.per_group.items()},
                "low": {"window_ev_per_atom": self.low_window, **self.low.to_json()},
                "worst": self.worst.to_json(), "gamma": self.gamma.to_json() if self.gamma else None}


@dataclass(frozen=True)
class _Differences:
    """Predicted minus reference labels, per structure and per atom of the structures with forces."""

    n_atoms: np.ndarray
    ref_epa: np.ndarray           # reference energy per atom (eV/atom)
    pred_epa: np.ndarray
    dforces: list                 # per structure: [n_atoms, 3] (eV/Å), None for an energy-only one
    with_forces: list[int]
    all_df: np.ndarray            # [atoms of the structures with forces, 3]
    ref_f: np.ndarray             # their reference force components, flat

    @classmethod
    def of(cls, numbers: Sequence[np.ndarray], reference: Labels, predicted: Labels) -> "_Differences":
        n_atoms = np.array([len(z) for z in numbers])
        dforces = [None if r is None else np.asarray(p) - np.asarray(r)
                   for p, r in zip(predicted.forces, reference.forces)]
        with_f = [i for i, d in enumerate(dforces) if d is not None]

        ref_f = np.concatenate([np.asarray(reference.forces[i]) for i in with_f]).ravel() if with_f else np.zeros(0)
        return cls(n_atoms, np.asarray(reference.energy) / n_atoms, np.asarray(predicted.energy) / n_atoms,
                   dforces, with_f, np.concatenate([dforces[i] for i in with_f]) if with_f else np.zeros((0, 3)),
                   ref_f)

    @property
    def de(self) -> np.ndarray:
        return self.pred_epa - self.ref_epa

    @functools.cached_property
    def all_errors(self) -> EnergyForceErrors:
        """Errors of all structures."""
        return EnergyForceErrors.of(self.de, self.all_df)

    def errors(self, structures: np.ndarray) -> EnergyForceErrors:
        """Errors of the structures in the boolean mask ``structures`` (all of them: the same
        numbers as :attr:`all_errors`, which are reused; one group, or a "low" window holding every
        structure, is common, and each pass over 10⁶ force components costs tenths of a second)."""
        structures = np.asarray(structures, dtype=bool)
        if structures.all():
            return self.all_errors
        atoms = np.repeat(structures[self.with_forces], self.n_atoms[self.with_forces])
        return EnergyForceErrors.of(self.de[structures], self.all_df[atoms])

    def per_element(self, numbers: Sequence[np.ndarray]) -> dict[str, ElementForceErrors]:
        """Force errors per element (keys: chemical symbols, sorted), of the atoms of the structures
        with forces (masks by atomic number: comparing 10⁶ symbol strings took ~1 s at 10⁵ cells)."""
        flat = (np.concatenate([np.asarray(numbers[i], dtype=np.int64) for i in self.with_forces])
                if self.with_forces else np.zeros(0, dtype=np.int64))
        result = {}
        for z in sorted(np.flatnonzero(np.bincount(flat)), key=lambda z: chemical_symbols[z]):
            mine = flat == z
            if mine.all():  # one element: the errors of all atoms, computed once (the same numbers)
                errors = self.all_errors
                result[chemical_symbols[z]] = ElementForceErrors(len(mine), errors.force_rmse, errors.force_mae)
                continue
            result[chemical_symbols[z]] = ElementForceErrors(int(np.sum(mine)), _rmse(1e3 * self.all_df[mine]),
                                                             _mae(1e3 * self.all_df[mine]))
        return result


@np.errstate(over="ignore", invalid="ignore")
def compute_metrics(numbers: Sequence[np.ndarray], groups: Sequence[str], reference: Labels, predicted: Labels,
                    gamma_max: Optional[np.ndarray] = None, options: MetricOptions = MetricOptions()) -> ErrorMetrics:
    """All metrics of one set of structures (``numbers``: per structure, each atom's atomic number).

    ``reference.energy`` must already be on the potential's energy scale (eV, total per
    structure). An energy-only structure (reference forces ``None``) counts in the energy metrics
    only.
    """
    d = _Differences.of(numbers, reference, predicted)
    groups = np.asarray(groups, dtype=object)
    table = PerStructureErrors.of(d.n_atoms, d.de, d.dforces, gamma_max)
    return ErrorMetrics(
        n_atoms=int(d.n_atoms.sum()), n_energy_only=int(len(d.n_atoms) - len(d.with_forces)),
        errors=d.all_errors, energy_r2=_r2(d.de, d.ref_epa),
        force_r2=_r2(d.all_df.ravel(), d.ref_f), stress=StressErrors.of(reference.stress, predicted.stress),
        per_element=d.per_element(numbers),
        per_group={str(g): d.errors(groups == g) for g in sorted(set(groups.tolist()), key=str)},
        low_window=options.low_window, low=d.errors(d.ref_epa <= d.ref_epa.min() + options.low_window),
        worst=WorstStructures.of(table, groups, d.with_forces, options.n_worst),
        gamma=GammaStatistics.of(gamma_max, table.force_rmse) if gamma_max is not None else None,
        per_structure=table)


def _voigt(stress) -> np.ndarray:
    s = np.asarray(stress, dtype=float).reshape(-1)
    if s.size == 9:
        m = s.reshape(3, 3)
        return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])
    return s
