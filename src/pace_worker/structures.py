"""Reading labelled structures (extxyz, .xyz.gz, pacemaker DataFrame pickles) and checking them.

Labels are taken, per structure, from the first place that has them:

* energy: ``data.energy_key`` if set, else the calculator result ``energy`` (ASE puts an
  extxyz ``energy=`` there), else ``info`` keys ``energy``, ``REF_energy``, ``dft_energy``,
  ``DFT_energy``, ``energy_dft``, ``total_energy``, ``TotEnergy``, ``Energy``;
* forces: ``data.forces_key``, else calculator ``forces``, else ``arrays`` keys ``forces``,
  ``REF_forces``, ``dft_forces``, ``DFT_forces``, ``forces_dft``, ``force``;
* stress (kept, not fitted): ``data.stress_key``, else calculator ``stress``, else ``info``
  keys ``stress``, ``REF_stress``, ``dft_stress``, ``DFT_stress``.

A structure without forces is kept as energy-only (its force weight is zero in the fit).
Everything is checked before any fitting; the first problem is raised as an
:class:`~pace_worker.errors.InputError` naming the file and the structure index.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from pace_worker.errors import InputError, check_readable_file, first_line
from pace_worker.frames import is_compressed

ENERGY_KEYS = ("energy", "REF_energy", "dft_energy", "DFT_energy", "energy_dft", "total_energy",
               "TotEnergy", "Energy")
FORCES_KEYS = ("forces", "REF_forces", "dft_forces", "DFT_forces", "forces_dft", "force")
STRESS_KEYS = ("stress", "REF_stress", "dft_stress", "DFT_stress")
PICKLE_SUFFIXES = (".pckl.gzip", ".pkl.gzip", ".pckl.gz", ".pkl.gz", ".pckl", ".pkl")


@dataclass
class LabelledStructures:
    """Structures with their reference labels, in file order.

    ``forces[i]`` is ``None`` for an energy-only structure; ``stresses[i]`` is ``None`` when
    the structure has no stress.
    """

    path: Path
    atoms: list[Atoms]
    energies: np.ndarray
    forces: list[Optional[np.ndarray]]
    stresses: list[Optional[np.ndarray]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.atoms)

    @property
    def n_atoms(self) -> int:
        return int(sum(len(a) for a in self.atoms))

    @property
    def elements(self) -> list[str]:
        return sorted({s for a in self.atoms for s in a.get_chemical_symbols()})

    def atoms_per_element(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self.atoms:
            for s in a.get_chemical_symbols():
                counts[s] = counts.get(s, 0) + 1
        return counts

    @property
    def energy_only(self) -> np.ndarray:
        return np.array([f is None for f in self.forces], dtype=bool)

    def subset(self, indices: Sequence[int]) -> "LabelledStructures":
        idx = list(indices)
        return LabelledStructures(
            path=self.path,
            atoms=[self.atoms[i] for i in idx],
            energies=self.energies[idx] if len(idx) else np.zeros(0),
            forces=[self.forces[i] for i in idx],
            stresses=[self.stresses[i] for i in idx] if self.stresses else [],
        )

    def labelled_atoms(self) -> list[Atoms]:
        """Copies of the structures with the labels as a SinglePointCalculator (for writing)."""
        result = []
        for i, atoms in enumerate(self.atoms):
            copy = atoms.copy()
            results = {"energy": float(self.energies[i])}
            if self.forces[i] is not None:
                results["forces"] = self.forces[i]
            if self.stresses and self.stresses[i] is not None:
                results["stress"] = self.stresses[i]
            copy.calc = SinglePointCalculator(copy, **results)
            result.append(copy)
        return result


def structure_fingerprint(atoms: Atoms, salt: str = "") -> str:
    """A content hash of a structure (species, positions, cell, pbc) that ignores labels/info."""
    h = hashlib.sha256(salt.encode())
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.positions, dtype=float), 6).tobytes())
    h.update(np.round(np.asarray(atoms.cell.array, dtype=float), 6).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- reading
def _is_pickle(path: Path) -> bool:
    return path.name.lower().endswith(PICKLE_SUFFIXES)


def _read_ase(path: Path) -> list[Atoms]:
    import ase.io
    from ase.io.formats import open_with_compression

    try:
        if is_compressed(path):  # decompressed once: ASE would seek back into the stream
            with open_with_compression(str(path), "r") as f:  # once per frame, from its start each time
                images = ase.io.read(io.StringIO(f.read()), index=":", format="extxyz")
        else:
            images = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as exc:  # ASE raises many kinds for a malformed file
        raise InputError(f"dataset '{path}' is not a readable extended XYZ file ({first_line(exc)}); "
                         "give an extxyz (.xyz/.extxyz, optionally .gz) or a pacemaker .pckl.gzip file")
    return list(images)


def _read_pickle(path: Path) -> tuple[list[Atoms], list, list]:
    import pandas as pd

    try:
        df = pd.read_pickle(path, compression="infer" if not path.name.endswith("gzip") else "gzip")
    except (pickle.UnpicklingError, gzip.BadGzipFile, EOFError, ValueError, OSError, AttributeError) as exc:
        raise InputError(f"dataset '{path}' is not a readable pandas pickle ({type(exc).__name__}: {exc}); "
                         "give a pacemaker DataFrame (.pckl.gzip) or an extxyz file")
    if not isinstance(df, pd.DataFrame) or "ase_atoms" not in df.columns:
        raise InputError(f"dataset '{path}' is not a pacemaker DataFrame (needs an 'ase_atoms' column)")
    energy_col = "energy" if "energy" in df.columns else ("energy_corrected" if "energy_corrected" in df.columns
                                                          else None)
    atoms = [a.copy() for a in df["ase_atoms"]]
    energies = list(df[energy_col]) if energy_col else [None] * len(df)
    forces = list(df["forces"]) if "forces" in df.columns else [None] * len(df)
    return atoms, energies, forces


def _label(atoms: Atoms, key: Optional[str], defaults: Sequence[str], kind: str):
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    store = atoms.arrays if kind == "forces" else atoms.info
    keys = [key] if key else list(defaults)
    if not key and kind in results:
        return results[kind]
    for k in keys:
        if k in store:
            return store[k]
        if k in results:
            return results[k]
    return None


def read_labelled_structures(path, energy_key: Optional[str] = None, forces_key: Optional[str] = None,
                             stress_key: Optional[str] = None, min_distance: float = 0.5,
                             require_structures: bool = True) -> LabelledStructures:
    """Read and check a labelled dataset.

    Parameters
    ----------
    path : extxyz (``.xyz``, ``.extxyz``, ``.xyz.gz``) or pacemaker pickle (``.pckl.gzip``)
    energy_key, forces_key, stress_key : override the auto-detected label names
    min_distance : two atoms closer than this (Å) are an error
    """
    path = check_readable_file(path, "dataset", "check the path given to --dataset")

    if _is_pickle(path):
        atoms_list, raw_energies, raw_forces = _read_pickle(path)
        raw_stresses = [None] * len(atoms_list)
    else:
        atoms_list = _read_ase(path)
        raw_energies = [_label(a, energy_key, ENERGY_KEYS, "energy") for a in atoms_list]
        raw_forces = [_label(a, forces_key, FORCES_KEYS, "forces") for a in atoms_list]
        raw_stresses = [_label(a, stress_key, STRESS_KEYS, "stress") for a in atoms_list]

    if require_structures and not atoms_list:
        raise InputError(f"dataset '{path}' contains no structures")

    energies = np.zeros(len(atoms_list))
    forces: list[Optional[np.ndarray]] = []
    stresses: list[Optional[np.ndarray]] = []
    for i, atoms in enumerate(atoms_list):
        where = f"dataset '{path}', structure {i}"
        if len(atoms) == 0:
            raise InputError(f"{where} has no atoms; remove it from the file")
        energy = raw_energies[i]
        if energy is None:
            looked = f"'{energy_key}'" if energy_key else "calculator energy, info " + "/".join(ENERGY_KEYS)
            raise InputError(f"{where} has no energy (looked for {looked}); add it, drop the structure, "
                             "or name its key with data.energy_key in config.yaml")
        try:
            energy = float(np.asarray(energy, dtype=float).reshape(()))
        except (TypeError, ValueError):
            raise InputError(f"{where}: energy {energy!r} is not a number")
        if not np.isfinite(energy):
            raise InputError(f"{where}: energy is {energy}; fix or drop the structure")
        energies[i] = energy

        f = raw_forces[i]
        if f is not None:
            try:
                f = np.asarray(f, dtype=float)
            except (TypeError, ValueError):
                raise InputError(f"{where}: forces are not numbers")
            if f.shape != (len(atoms), 3):
                raise InputError(f"{where}: forces have shape {f.shape}, expected ({len(atoms)}, 3) "
                                 "(one x,y,z row per atom)")
            if not np.all(np.isfinite(f)):
                bad = int(np.argwhere(~np.isfinite(f))[0][0])
                raise InputError(f"{where}: force of atom {bad} is not finite (NaN/inf); fix or drop the structure")
        forces.append(f)

        s = raw_stresses[i]
        if s is not None:
            s = np.asarray(s, dtype=float).reshape(-1)
            if s.size not in (6, 9) or not np.all(np.isfinite(s)):
                raise InputError(f"{where}: stress must be 6 (Voigt) or 9 finite numbers, got {s.size} values")
        stresses.append(s)

        if min_distance > 0 and len(atoms) > 1:
            pair = closest_pair_below(atoms, min_distance)
            if pair is not None:
                a, b, d = pair
                raise InputError(f"{where}: atoms {a} ({atoms[a].symbol}) and {b} ({atoms[b].symbol}) are "
                                 f"{d:.3f} Å apart (< {min_distance} Å); the structure is unphysical, drop it "
                                 "(or lower data.min_distance)")
    return LabelledStructures(path=path, atoms=list(atoms_list), energies=energies, forces=forces,
                              stresses=stresses)


def closest_pair_below(atoms: Atoms, threshold: float):
    """The closest pair (i, j, distance) of atoms nearer than ``threshold`` Å, or None."""
    from ase.neighborlist import neighbor_list

    probe = atoms
    if not np.any(atoms.pbc) and atoms.cell.rank < 3:
        probe = atoms.copy()
        probe.center(vacuum=threshold + 1.0)
    i, j, d = neighbor_list("ijd", probe, threshold)
    if len(d) == 0:
        return None
    k = int(np.argmin(d))
    a, b = sorted((int(i[k]), int(j[k])))
    return a, b, float(d[k])


def write_extxyz_atomic(path: Path, atoms: list[Atoms]) -> None:
    """Write structures as extxyz to ``path`` through a temporary name and a rename."""
    import ase.io

    from pace_worker.atomic_io import atomic_output

    with atomic_output(path) as tmp:
        ase.io.write(str(tmp), atoms, format="extxyz")


def fully_periodic_or_not(atoms: Atoms, cutoff: float) -> Atoms:
    """``atoms`` as pyace accepts them (fully periodic or not at all): a slab or wire (mixed
    ``pbc``) becomes fully periodic with at least ``cutoff`` Å of vacuum on each side of its
    non-periodic directions, so no atom sees a periodic image across them. Other structures are
    returned as they are."""
    if atoms.pbc.all() or not atoms.pbc.any():
        return atoms
    open_axes = [i for i in range(3) if not atoms.pbc[i]]
    periodic = atoms.copy()
    periodic.center(vacuum=cutoff, axis=open_axes)
    periodic.pbc = True
    return periodic
