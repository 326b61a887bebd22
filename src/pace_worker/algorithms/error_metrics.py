"""Error metrics of predictions against reference labels (pure numpy, no I/O).

Conventions (the same as pacemaker's metrics):

* energies per atom, on pacemaker's ``energy_corrected`` scale, in meV/atom;
* forces per Cartesian component in meV/Å (``force_norm_rmse`` uses the error vector's length);
* stresses per Voigt component in GPa;
* R² = 1 − SS_res / SS_tot of per-atom energies and of force components;
* the "low" subset: structures whose reference energy per atom is within ``low_window`` eV/atom
  (default 1) of the lowest one, as in pacemaker's "low" columns.

Every force error is computed from sums over the components (:class:`ForceSums`): the structures'
are summed per structure and element where they are evaluated (:class:`StructureErrorColumns`, on
the workers, chunk by chunk), so the metrics of 10⁵–10⁶ structures need a few numbers per structure
in one process, not every force array. Sums in another order than one pass over all components
differ in the last digits only (~1e-15 relative).

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
    """``(_mae(x), max |x|)`` from one ``|x|``, made in place: ``x`` (a scratch array) is overwritten."""
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
class ForceSums:
    """Sums over the force errors ΔF (eV/Å) of a set of atoms: what every force error of
    :class:`EnergyForceErrors` is computed from."""

    atoms: int
    squared: float   # Σ ΔF² over the components
    absolute: float  # Σ |ΔF|
    max_abs: float   # max |ΔF| (0 without atoms)

    @classmethod
    @np.errstate(over="ignore", invalid="ignore")
    def of(cls, dforces: np.ndarray) -> "ForceSums":
        """Of force errors of shape [atoms, 3]."""
        df = np.asarray(dforces, dtype=float).reshape(-1, 3)
        if not df.size:
            return cls(0, 0.0, 0.0, 0.0)
        magnitude = np.abs(df)
        return cls(len(df), float(np.sum(df * df)), float(np.sum(magnitude)), float(np.max(magnitude)))


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
    def of(cls, de_per_atom: np.ndarray, forces: ForceSums) -> "EnergyForceErrors":
        """From energy errors (eV/atom) and the sums of the force errors (``√(ΣΔF²/atoms)`` is the
        RMSE of the error vectors' lengths)."""
        de = np.asarray(de_per_atom) * 1e3
        energy_rmse = _rmse(de)  # before de is overwritten
        energy = (energy_rmse, *_mae_and_max_overwriting(de))
        if not forces.atoms:
            return cls(int(len(de)), *energy, None, None, None, None)
        components = 3 * forces.atoms
        return cls(int(len(de)), *energy, 1e3 * float(np.sqrt(forces.squared / components)),
                   1e3 * forces.absolute / components, 1e3 * forces.max_abs,
                   1e3 * float(np.sqrt(forces.squared / forces.atoms)))

    def errors_json(self) -> dict:
        """The errors under their JSON keys (:data:`ERROR_KEYS`), without the count."""
        return {key: getattr(self, name) for name, key in ERROR_JSON_KEYS.items()}

    def to_json(self) -> dict:
        return {"n_structures": self.n_structures, **self.errors_json()}


def energy_force_errors(de_per_atom: np.ndarray, dforces: np.ndarray) -> dict:
    """The JSON of :meth:`EnergyForceErrors.of` of energy errors (eV/atom) and force errors
    ([atoms, 3], eV/Å)."""
    return EnergyForceErrors.of(de_per_atom, ForceSums.of(dforces)).to_json()


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
    def of(cls, stress_error: np.ndarray, has_stress: np.ndarray) -> Optional["StressErrors"]:
        """From per-structure errors (:attr:`StructureErrorColumns.stress_error`); None when no
        structure has both a reference and a predicted stress."""
        if not has_stress.any():
            return None
        ds = stress_error[has_stress]
        return cls(int(len(ds)), _rmse(ds), _mae(ds))

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


@dataclass
class StructureErrorColumns:
    """Per structure, in order, the numbers every error metric is computed from, as columns (one
    row per structure): made where the structures are evaluated (:meth:`of`, on the workers, chunk
    by chunk) and joined in order (:meth:`joined`), so the main process holds a few numbers per
    structure, not its force arrays. The force columns of an energy-only structure are NaN (its
    sums 0)."""

    elements: tuple[int, ...]         # atomic numbers of the per-element columns
    element_atoms: np.ndarray         # [n, elements]: atoms of each element (every atom is of one)
    predicted_energy: np.ndarray      # [n] total energy (eV)
    has_forces: np.ndarray            # [n] bool: a reference force is given
    force_squared: np.ndarray         # [n, elements]: Σ ΔF² over each element's components (eV²/Å²)
    force_absolute: np.ndarray        # [n, elements]: Σ |ΔF|
    force_max_abs: np.ndarray         # [n] max |ΔF| component (eV/Å)
    force_rmse: np.ndarray            # [n] 1e3 · √mean(ΔF²) (meV/Å)
    force_max_error: np.ndarray       # [n] 1e3 · max |ΔF_atom| (meV/Å)
    reference_force_mean: np.ndarray  # [n] mean of the reference force components
    reference_force_m2: np.ndarray    # [n] Σ (reference component − that mean)²
    force_range: np.ndarray           # [n, 2] lowest and highest component, reference or predicted (eV/Å)
    has_stress: np.ndarray            # [n] bool: a reference and a predicted stress
    stress_error: np.ndarray          # [n, 6] predicted − reference (GPa, Voigt); NaN without

    def __len__(self) -> int:
        return len(self.element_atoms)

    @functools.cached_property
    def n_atoms(self) -> np.ndarray:
        """[n] atoms of each structure."""
        return self.element_atoms.sum(axis=1)

    @classmethod
    @np.errstate(over="ignore", invalid="ignore")
    def of(cls, elements: Sequence[int], numbers: Sequence[np.ndarray], predicted_energy: Sequence[float],
           reference_forces: Sequence[Optional[np.ndarray]], predicted_forces: Sequence[np.ndarray],
           reference_stress: Sequence[Optional[np.ndarray]] = (),
           predicted_stress: Sequence[Optional[np.ndarray]] = ()) -> "StructureErrorColumns":
        """The columns of structures given by their atomic numbers (each in ``elements``), predicted
        energies, reference forces (None: energy-only) and predicted forces ([atoms, 3], eV/Å), and
        stresses (eV/Å³; reference 6 Voigt or 9 values; None or left out: none). The per-structure
        force RMSE and max |ΔF_atom| are computed on stacks of structures of one shape; each
        structure's are those of the same numpy operations on it alone, bit for bit."""
        n, width = len(numbers), len(elements)
        column_of = np.full(max(max(elements, default=0), *(int(z.max(initial=0)) for z in numbers), 0) + 1, -1)
        column_of[list(elements)] = np.arange(width)
        species = [column_of[np.asarray(z, dtype=np.int64)] for z in numbers]
        if any((s < 0).any() for s in species):
            raise ValueError(f"structures with elements not among {sorted(elements)}")
        nan = np.full(n, np.nan)
        columns = cls(tuple(int(z) for z in elements),
                      np.array([np.bincount(s, minlength=width) for s in species], dtype=np.int64).reshape(n, width),
                      np.asarray(predicted_energy, dtype=float).reshape(n),
                      np.array([f is not None for f in reference_forces], dtype=bool).reshape(n),
                      np.zeros((n, width)), np.zeros((n, width)), nan.copy(), nan.copy(), nan.copy(), nan.copy(),
                      nan.copy(), np.full((n, 2), np.nan), np.zeros(n, dtype=bool), np.full((n, 6), np.nan))
        dforces = [None if r is None else np.asarray(p) - np.asarray(r)
                   for p, r in zip(predicted_forces, reference_forces)]
        for rows, stack in _stacks_of_one_shape(dforces):
            columns._add_forces(rows, stack, np.stack([species[i] for i in rows]),
                                np.stack([np.asarray(reference_forces[i], dtype=float) for i in rows]),
                                np.stack([np.asarray(predicted_forces[i], dtype=float) for i in rows]))
        for i, (p, r) in enumerate(zip(predicted_stress, reference_stress)):
            if p is not None and r is not None:
                columns.has_stress[i] = True
                columns.stress_error[i] = (np.asarray(p).reshape(-1)[:6] - _voigt(r)) * EV_PER_A3_TO_GPA
        return columns

    def _add_forces(self, rows: np.ndarray, df: np.ndarray, species: np.ndarray, reference: np.ndarray,
                    predicted: np.ndarray) -> None:
        """The force columns of the structures ``rows`` from stacks of one shape ([k, atoms, 3])."""
        squared = df ** 2
        self.force_rmse[rows] = 1e3 * np.sqrt(np.mean(squared, axis=(1, 2)))
        self.force_max_error[rows] = 1e3 * np.max(np.linalg.norm(df, axis=2), axis=1)
        magnitude = np.abs(df)
        self.force_max_abs[rows] = np.max(magnitude, axis=(1, 2))
        per_atom_squared, per_atom_absolute = squared.sum(axis=2), magnitude.sum(axis=2)
        for e in range(len(self.elements)):
            mine = species == e
            self.force_squared[rows, e] = np.sum(per_atom_squared * mine, axis=1)
            self.force_absolute[rows, e] = np.sum(per_atom_absolute * mine, axis=1)
        mean = np.mean(reference, axis=(1, 2))
        self.reference_force_mean[rows] = mean
        self.reference_force_m2[rows] = np.sum((reference - mean[:, None, None]) ** 2, axis=(1, 2))
        self.force_range[rows, 0] = np.minimum(reference.min(axis=(1, 2)), predicted.min(axis=(1, 2)))
        self.force_range[rows, 1] = np.maximum(reference.max(axis=(1, 2)), predicted.max(axis=(1, 2)))

    @classmethod
    def joined(cls, parts: Sequence["StructureErrorColumns"]) -> "StructureErrorColumns":
        """The columns of consecutive parts (of one element list), in order."""
        if len({part.elements for part in parts}) > 1:
            raise ValueError("columns of different element lists")
        arrays = {f.name: np.concatenate([getattr(part, f.name) for part in parts])
                  for f in fields(cls) if f.name != "elements"}
        return cls(parts[0].elements, **arrays)

    @np.errstate(over="ignore", invalid="ignore")
    def force_sums(self, structures: np.ndarray) -> ForceSums:
        """The sums over all force components of the structures in the boolean mask ``structures``."""
        rows = structures & self.has_forces
        if not rows.any():
            return ForceSums(0, 0.0, 0.0, 0.0)
        return ForceSums(int(self.n_atoms[rows].sum()), float(self.force_squared[rows].sum()),
                         float(self.force_absolute[rows].sum()), float(self.force_max_abs[rows].max()))

    def per_element(self) -> dict[str, "ElementForceErrors"]:
        """Force errors per element (keys: chemical symbols, sorted) of the atoms of the structures
        with forces."""
        rows = self.has_forces
        atoms = self.element_atoms[rows].sum(axis=0)
        squared, absolute = self.force_squared[rows].sum(axis=0), self.force_absolute[rows].sum(axis=0)
        result = {}
        for e in sorted(np.flatnonzero(atoms), key=lambda e: chemical_symbols[self.elements[e]]):
            components = 3 * int(atoms[e])
            result[chemical_symbols[self.elements[e]]] = ElementForceErrors(
                int(atoms[e]), 1e3 * float(np.sqrt(squared[e] / components)), 1e3 * float(absolute[e]) / components)
        return result

    def force_r2(self) -> Optional[float]:
        """R² of the predicted force components: 1 − ΣΔF² / Σ(F_ref − mean)², the latter from the
        structures' means and sums of squares (the law of total variance)."""
        rows = self.has_forces
        count = 3 * self.n_atoms[rows]
        if count.sum() < 2:
            return None
        means = self.reference_force_mean[rows]
        mean = float(np.sum(count * means) / count.sum())
        ss_tot = float(np.sum(self.reference_force_m2[rows]) + np.sum(count * (means - mean) ** 2))
        return float(1 - np.sum(self.force_squared[rows]) / ss_tot) if ss_tot > 0 else None


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


@np.errstate(over="ignore", invalid="ignore")
def compute_metrics(columns: StructureErrorColumns, reference_energy: np.ndarray, groups: Sequence[str],
                    gamma_max: Optional[np.ndarray] = None, options: MetricOptions = MetricOptions()) -> ErrorMetrics:
    """All metrics of one set of structures, from their columns (:class:`StructureErrorColumns`)
    and reference total energies (eV), which must already be on the potential's energy scale. An
    energy-only structure counts in the energy metrics only."""
    n_atoms = columns.n_atoms
    ref_epa = np.asarray(reference_energy, dtype=float) / n_atoms
    de = columns.predicted_energy / n_atoms - ref_epa
    groups = np.asarray(groups, dtype=object)
    table = PerStructureErrors(n_atoms.astype(int), de * 1e3, columns.force_rmse, columns.force_max_error, gamma_max)

    def errors(structures: np.ndarray) -> EnergyForceErrors:
        return EnergyForceErrors.of(de[structures], columns.force_sums(structures))

    everything = np.ones(len(de), dtype=bool)
    return ErrorMetrics(
        n_atoms=int(n_atoms.sum()), n_energy_only=int(len(de) - columns.has_forces.sum()),
        errors=errors(everything), energy_r2=_r2(de, ref_epa), force_r2=columns.force_r2(),
        stress=StressErrors.of(columns.stress_error, columns.has_stress),
        per_element=columns.per_element(),
        per_group={str(g): errors(groups == g) for g in sorted(set(groups.tolist()), key=str)},
        low_window=options.low_window, low=errors(ref_epa <= ref_epa.min() + options.low_window),
        worst=WorstStructures.of(table, groups, list(np.flatnonzero(columns.has_forces)), options.n_worst),
        gamma=GammaStatistics.of(gamma_max, table.force_rmse) if gamma_max is not None else None,
        per_structure=table)


def _voigt(stress) -> np.ndarray:
    s = np.asarray(stress, dtype=float).reshape(-1)
    if s.size == 9:
        m = s.reshape(3, 3)
        return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])
    return s
