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

import functools
import hashlib
import io
import logging
import math
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from pace_worker.errors import InputError, check_readable_file, first_line
from pace_worker.files.atomic_io import atomic_output
from pace_worker.files.c_extxyz import parse_frames_c
from pace_worker.files.compression import is_compressed, open_with_compression
from pace_worker.files.frame_text import file_frame_blocks
from pace_worker.files.safe_pickle import load_dataframe
from pace_worker.stack import import_pyace_core

log = logging.getLogger(__name__)

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
        return atoms_per_element(self.atoms)

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


def atoms_per_element(structures: Sequence[Atoms]) -> dict[str, int]:
    """How many atoms of each element the structures hold together."""
    counts: Counter = Counter()
    for atoms in structures:
        counts.update(atoms.get_chemical_symbols())
    return dict(counts)


def check_elements_covered(structures: "LabelledStructures", allowed: Sequence[str], what: str, not_covered: str,
                           fix: str) -> None:
    """Every element of every structure is in ``allowed``; else an :class:`InputError` naming the
    first structure that has another: "<what> '<path>', structure i: element(s) X <not_covered>; <fix>"."""
    allowed_set = set(allowed)
    for i, atoms in enumerate(structures.atoms):
        check_structure_elements(atoms, allowed_set, f"{what} '{structures.path}', structure {i}", not_covered, fix)


def check_structure_elements(atoms: Atoms, allowed: set, where: str, not_covered: str, fix: str) -> None:
    """One structure's elements are all in ``allowed`` (the error names the structure by ``where``)."""
    missing = sorted({chemical_symbols[z] for z in set(atoms.numbers.tolist())} - allowed)
    if missing:
        raise InputError(f"{where}: element(s) {', '.join(missing)} {not_covered}; {fix}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FileSha256Meanwhile:
    """:func:`file_sha256` of ``path`` on a daemon thread from :meth:`start` on (reading and hashing
    release the GIL, so it runs beside this thread's work); :meth:`result` waits for it and returns
    it, or raises its error (it starts the hash if nothing did). A command that stops before asking
    (an error, a signal) does not wait for the hash. Start it only where nothing forks any more."""

    def __init__(self, path: Path):
        self.path = path
        self._digest: Optional[Future] = None

    def start(self) -> None:
        if self._digest is None:
            self._digest = Future()
            threading.Thread(target=self._run, name="sha256", daemon=True).start()

    def _run(self) -> None:
        try:
            self._digest.set_result(file_sha256(self.path))
        except BaseException as exc:  # noqa: BLE001 (raised where the result is asked for)
            self._digest.set_exception(exc)

    def result(self) -> str:
        self.start()
        return self._digest.result()


# ----------------------------------------------------------------------------- reading
def is_pickle(path: Path) -> bool:
    """Whether ``path`` names a pacemaker pickle (``.pckl.gzip``) rather than extxyz."""
    return path.name.lower().endswith(PICKLE_SUFFIXES)


def _read_c(path: Path, what: str) -> Optional[list[Atoms]]:
    """All structures of a plain extxyz file by the C parser, block by block; None as soon as a
    block must be read by ASE, or the file is not even frames (ASE's reading then says why)."""
    structures: list[Atoms] = []
    try:
        for texts in file_frame_blocks(path, what):
            parsed = parse_frames_c(texts)
            if parsed is None:
                return None
            structures.extend(parsed)
    except InputError:
        return None
    return structures


def _read_ase(path: Path, what: str = "dataset") -> list[Atoms]:
    """All structures of an extxyz file: a plain file by libAtoms' C parser where it reads them as
    ASE does (:mod:`pace_worker.files.c_extxyz`); otherwise, and for every error, by ASE."""
    if not is_compressed(path):
        parsed = _read_c(path, what)
        if parsed is not None:
            return parsed
    import ase.io

    try:
        if is_compressed(path):  # decompressed once: ASE would seek back into the stream
            with open_with_compression(str(path), "r") as f:  # once per frame, from its start each time
                images = ase.io.read(io.StringIO(f.read()), index=":", format="extxyz")
        else:
            images = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as exc:  # ASE raises many kinds for a malformed file
        raise InputError(f"{what} '{path}' is not a readable extended XYZ file ({first_line(exc)}); "
                         "give an extxyz (.xyz/.extxyz, optionally .gz) or a pacemaker .pckl.gzip file")
    return list(images)


def _read_pickle(path: Path, what: str = "dataset") -> tuple[list[Atoms], list, list]:
    """A pacemaker DataFrame (restricted unpickling: :mod:`pace_worker.files.safe_pickle`)."""
    import pandas as pd

    df = load_dataframe(path, what)
    if not isinstance(df, pd.DataFrame) or "ase_atoms" not in df.columns:
        raise InputError(f"{what} '{path}' is not a pacemaker DataFrame (needs an 'ase_atoms' column)")
    for i, atoms in enumerate(df["ase_atoms"]):
        if not isinstance(atoms, Atoms):
            raise InputError(f"{what} '{path}', structure {i}: its ase_atoms entry is {atoms!r:.40}, not an ASE "
                             "Atoms object; fix or drop the structure")
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


@dataclass(frozen=True)
class LabelKeys:
    """Where the labels are, overriding the places the module docstring lists (None: those places)."""

    energy_key: Optional[str] = None
    forces_key: Optional[str] = None
    stress_key: Optional[str] = None


def read_labelled_structures(path, *, min_distance: float = 0.5, what: str = "dataset", given_by: str = "--dataset",
                             **label_keys: Optional[str]) -> LabelledStructures:
    """Read and check a labelled dataset (at least one structure).

    Parameters
    ----------
    path : extxyz (``.xyz``, ``.extxyz``, ``.xyz.gz``) or pacemaker pickle (``.pckl.gzip``)
    min_distance : two atoms closer than this (Å) are an error
    what : what the file is, in messages ("dataset", "test set")
    given_by : the flag or config key the path came from (``--test-set``, ``config data.test_filename``)
    label_keys : ``energy_key``, ``forces_key``, ``stress_key`` (:class:`LabelKeys`): override the
        auto-detected label names
    """
    keys = LabelKeys(**label_keys)
    path = readable_labelled_file(path, what, given_by)

    if is_pickle(path):
        atoms_list, raw_energies, raw_forces = _read_pickle(path, what)
        raw = [(e, f, None) for e, f in zip(raw_energies, raw_forces)]
    else:
        atoms_list = _read_ase(path, what)
        raw = [found_labels(a, keys) for a in atoms_list]

    if not atoms_list:
        raise InputError(f"{what} '{path}' contains no structures")

    energies = np.zeros(len(atoms_list))
    forces: list[Optional[np.ndarray]] = []
    stresses: list[Optional[np.ndarray]] = []
    for i, atoms in enumerate(atoms_list):
        energies[i], f, s = checked_labels(atoms, raw[i], f"{what} '{path}', structure {i}", keys.energy_key,
                                           min_distance)
        forces.append(f)
        stresses.append(s)
    return LabelledStructures(path=path, atoms=list(atoms_list), energies=energies, forces=forces,
                              stresses=stresses)


def readable_labelled_file(path, what: str, given_by: str) -> Path:
    """``path`` as a readable file, else the one-line error that says where the path came from
    (``given_by``: a flag such as ``--test-set``, or the config key or file that named it)."""
    return check_readable_file(path, what, f"check the path given to {given_by}" if given_by.startswith("--")
                               else f"check the path {given_by} names")


def found_labels(atoms: Atoms, keys: LabelKeys) -> tuple:
    """``(energy, forces, stress)`` as found on an extxyz structure (None where absent), unchecked."""
    return (_label(atoms, keys.energy_key, ENERGY_KEYS, "energy"),
            _label(atoms, keys.forces_key, FORCES_KEYS, "forces"),
            _label(atoms, keys.stress_key, STRESS_KEYS, "stress"))


def checked_labels(atoms: Atoms, raw: tuple, where: str, energy_key: Optional[str] = None,
                   min_distance: float = 0.5) -> tuple[float, Optional[np.ndarray], Optional[np.ndarray]]:
    """A labelled structure's ``(energy, forces or None, stress or None)``, checked in the order
    every reader of labelled data checks them: its geometry, energy, forces, stress, then no two
    atoms closer than ``min_distance``; ``where`` names the structure in the one-line error."""
    problem = geometry_problem(atoms)
    if problem is not None:
        raise InputError(f"{where}: {problem[1]}; fix or drop the structure")
    energy = _checked_energy(raw[0], where, energy_key)
    forces = _checked_forces(raw[1], where, len(atoms))
    stress = _checked_stress(raw[2], where)
    _check_min_distance(atoms, where, min_distance)
    return energy, forces, stress


def _checked_energy(energy, where: str, energy_key: Optional[str]) -> float:
    """A structure's energy label as a finite float (``where`` names the structure in messages)."""
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
    return energy


def _checked_forces(f, where: str, n_atoms: int) -> Optional[np.ndarray]:
    """Forces as a finite ``[n_atoms, 3]`` array, or None for an energy-only structure."""
    if f is None:
        return None
    try:
        f = np.asarray(f, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{where}: forces are not numbers")
    if f.shape != (n_atoms, 3):
        raise InputError(f"{where}: forces have shape {f.shape}, expected ({n_atoms}, 3) "
                         "(one x,y,z row per atom)")
    if not np.all(np.isfinite(f)):
        bad = int(np.argwhere(~np.isfinite(f))[0][0])
        raise InputError(f"{where}: force of atom {bad} is not finite (NaN/inf); fix or drop the structure")
    return f


def _checked_stress(s, where: str) -> Optional[np.ndarray]:
    """Stress as 6 (Voigt) or 9 finite numbers, or None."""
    if s is None:
        return None
    s = np.asarray(s, dtype=float).reshape(-1)
    if s.size not in (6, 9) or not np.all(np.isfinite(s)):
        raise InputError(f"{where}: stress must be 6 (Voigt) or 9 finite numbers, got {s.size} values")
    return s


def _check_min_distance(atoms: Atoms, where: str, min_distance: float) -> None:
    problem = too_close_problem(atoms, min_distance)
    if problem is not None:
        raise InputError(f"{where}: {problem[1]}; the structure is unphysical, drop it (or lower data.min_distance)")


# ----------------------------------------------------------------------------- geometry
MIN_CELL_WIDTH = 0.5        # Å: a periodic cell thinner than this is degenerate (its images pile up)
MIN_CELL_SINE = 1e-3        # volume / (|a| |b| |c|): below, two lattice vectors are (nearly) parallel
MAX_COORDINATE = 1e6        # Å: beyond, positions are garbage (and neighbour searches blow up)


def geometry_problem(atoms: Atoms, min_distance: float = 0.0) -> Optional[tuple[str, str]]:
    """``(reason, message)`` when pyace could not or should not see this structure, else None.

    Checked, in this order, before any pyace call (which would crash, run out of memory or hang
    on them): no atoms; non-finite or absurd positions; a periodic cell that is non-finite, has
    a zero or tiny width, or (nearly) parallel lattice vectors (:func:`shape_problem`); with
    ``min_distance`` > 0, two atoms closer than that (:func:`too_close_problem`). ``reason`` is a
    short key for counting.
    """
    return shape_problem(atoms) or too_close_problem(atoms, min_distance)


def shape_problem(atoms: Atoms) -> Optional[tuple[str, str]]:
    """:func:`geometry_problem` without the distance check: no atoms, positions, cell."""
    if len(atoms) == 0:
        return "no_atoms", "has no atoms"
    positions = np.asarray(atoms.positions, dtype=float)
    periodic = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=float)
    if _plainly_sound(positions, cell, periodic):
        return None
    if not np.all(np.isfinite(positions)):
        bad = int(np.argwhere(~np.all(np.isfinite(positions), axis=1))[0][0])
        return "non_finite_position", f"position of atom {bad} is not finite (NaN/inf)"
    if np.abs(positions).max() > MAX_COORDINATE:
        return "absurd_position", f"has a coordinate beyond {MAX_COORDINATE:g} Å"
    if periodic.any():
        if not np.all(np.isfinite(cell[periodic])):
            return "non_finite_cell", "its periodic cell has a non-finite (NaN/inf) entry"
        lengths = np.linalg.norm(cell, axis=1)
        if np.any(lengths[periodic] < MIN_CELL_WIDTH):
            axis = int(np.flatnonzero(periodic & (lengths < MIN_CELL_WIDTH))[0])
            return "degenerate_cell", (f"periodic lattice vector {axis} is {lengths[axis]:.3g} Å long "
                                       f"(< {MIN_CELL_WIDTH} Å)")
        if periodic.all():
            volume = abs(float(np.linalg.det(cell)))
            if volume / float(np.prod(lengths)) < MIN_CELL_SINE:
                return "degenerate_cell", "its lattice vectors are (nearly) parallel: the cell has no volume"
            widths = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)  # distances between opposite faces
            if widths.min() < MIN_CELL_WIDTH:
                return "degenerate_cell", f"its cell is {widths.min():.3g} Å thin (< {MIN_CELL_WIDTH} Å)"
    return None


def _plainly_sound(positions: np.ndarray, cell: np.ndarray, periodic: np.ndarray) -> bool:
    """True when :func:`shape_problem`'s checks clearly pass (the common case, in a few
    operations on plain floats); False also when unsure near a limit, and the full checks decide."""
    largest = float(np.abs(positions).max())  # NaN when a position is not finite: not <=
    if not largest <= MAX_COORDINATE / 2:
        return False
    if not periodic.any():
        return True
    if not periodic.all():
        return False  # slabs and wires: the full checks
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = cell.tolist()
    bc = (by * cz - bz * cy, bz * cx - bx * cz, bx * cy - by * cx)  # b × c, c × a, a × b
    ca = (cy * az - cz * ay, cz * ax - cx * az, cx * ay - cy * ax)
    ab = (ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx)
    volume = abs(ax * bc[0] + ay * bc[1] + az * bc[2])
    lengths = [math.sqrt(x * x + y * y + z * z) for x, y, z in ((ax, ay, az), (bx, by, bz), (cx, cy, cz))]
    areas = [math.sqrt(x * x + y * y + z * z) for x, y, z in (bc, ca, ab)]
    margin = 1.01  # the full checks' numbers come from other float operations: decide only clear cases
    return (math.isfinite(volume) and min(lengths) >= margin * MIN_CELL_WIDTH
            and volume >= margin * MIN_CELL_SINE * lengths[0] * lengths[1] * lengths[2]
            and volume >= margin * MIN_CELL_WIDTH * max(areas))


def too_close_problem(atoms: Atoms, min_distance: float,
                      known: Optional[tuple[float, float]] = None) -> Optional[tuple[str, str]]:
    """``("atoms_too_close", message)`` when two atoms are closer than ``min_distance`` Å, else
    None; ``known``: ``(shortest distance, reach)`` of a pyace neighbour list already built for
    these atoms (:func:`too_close_pair`)."""
    pair = too_close_pair(atoms, min_distance, known)
    if pair is None:
        return None
    a, b, d = pair
    return "atoms_too_close", (f"atoms {a} ({atoms[a].symbol}) and {b} ({atoms[b].symbol}) are {d:.3f} Å "
                               f"apart (< {min_distance} Å)")


def too_close_pair(atoms: Atoms, min_distance: float, known: Optional[tuple[float, float]] = None):
    """The closest pair ``(i, j, distance)`` nearer than ``min_distance`` Å, or None: pyace's fast
    neighbour list says whether there is one (:func:`has_pair_closer_than`), ASE's (slower) names it."""
    if not has_pair_closer_than(atoms, min_distance, known):
        return None
    return closest_pair_below(atoms, min_distance)


def has_pair_closer_than(atoms: Atoms, min_distance: float, known: Optional[tuple[float, float]] = None) -> bool:
    """Whether two of two or more atoms are closer than ``min_distance`` Å (> 0), by pyace's neighbour
    list: ``known`` (see :func:`shortest_within`) or one built for it."""
    return min_distance > 0 and len(atoms) >= 2 and shortest_within(atoms, min_distance, known) < min_distance


@functools.cache
def _build_atomic_env():
    """pyace's C++ neighbour-list builder, imported once per process."""
    import_pyace_core()
    from pyace.catomicenvironment import build_atomic_env

    return build_atomic_env


def shortest_within(atoms: Atoms, reach: float, known: Optional[tuple[float, float]] = None) -> float:
    """:func:`shortest_distance` within ``reach``, read from ``known`` — ``(shortest distance,
    its list's reach)`` of a pyace neighbour list already built for these atoms (its
    ``get_minimal_nn_distance``) — when that list reaches as far; else from a list built here."""
    if known is not None and known[1] >= reach:
        return known[0] if known[0] < reach else float("inf")
    return shortest_distance(atoms, reach)


def pyace_environment(atoms: Atoms, species: np.ndarray, cutoff: float):
    """pyace's atomic environment of ``atoms`` (its C++ ``build_atomic_env``) given each atom's
    species index; a slab or wire is made fully periodic first (pyace refuses them). The
    structure's own position and cell arrays go in, which the builder only reads: ASE's
    ``get_positions()`` and ``get_cell()`` would copy them (~25 µs of Python per call)."""
    periodic = fully_periodic_or_not(atoms, cutoff)
    return _build_atomic_env()(periodic.arrays["positions"], periodic.cell.array, species, bool(periodic.pbc.all()),
                               float(cutoff))


def shortest_distance(atoms: Atoms, reach: float) -> float:
    """The shortest interatomic distance if below ``reach`` (else ``inf``), from pyace's C++
    neighbour list (ASE is used only to name the pair, see :func:`closest_pair_below`)."""
    env = pyace_environment(atoms, np.zeros(len(atoms), dtype=int), reach)
    d = float(env.get_minimal_nn_distance())
    return d if d < reach else float("inf")


class SkippedStructures:
    """The pool rule: unusable structures of a pool are skipped, counted by reason, and the first
    few named in one warning line."""

    SHOWN = 5

    def __init__(self) -> None:
        self.by_reason: dict[str, int] = {}
        self.first: list[tuple[int, str]] = []

    def add(self, index: int, problem: str) -> None:
        reason = problem.split(":", 1)[0]
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if len(self.first) < self.SHOWN:
            self.first.append((int(index), problem))

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def summary(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.by_reason.items())) or "none"

    def report(self) -> dict:
        return {"total": self.total, "by_reason": dict(sorted(self.by_reason.items())),
                "first": [{"pool_index": i, "problem": p} for i, p in self.first]}

    def warn(self, where: str) -> None:
        if self.total:
            shown = "; ".join(f"structure {i}: {p}" for i, p in self.first[:3])
            log.warning("%s: skipped %d unusable structure(s) (%s); first: %s", where, self.total, self.summary(),
                        shown)


def shortest_distance_and_core(atoms: Atoms, inner_cutoffs: dict,
                               known: Optional[tuple[float, float]] = None) -> tuple[Optional[float], int]:
    """(shortest interatomic distance within the largest ``r_in`` + 3 Å, else None; number of pairs
    closer than their ``r_in``). The shortest distance comes from pyace's C++ neighbour list —
    ``known`` ``(shortest distance within reach, reach)`` from one already built (the evaluation's,
    bit for bit the same number) when it reaches that far; only a structure with a pair inside the
    largest ``r_in`` has its pairs counted by ASE's (about 30× slower on a 32-atom cell, and such
    structures are rare)."""

    if len(atoms) < 2 and not atoms.pbc.any():
        return None, 0
    largest_r_in = max(inner_cutoffs.values(), default=0.0)
    shortest = shortest_within(atoms, largest_r_in + 3.0, known)
    if shortest == float("inf"):
        return None, 0
    if shortest >= largest_r_in + 1e-9:  # a pair at r_in itself is ASE's to count (rounding differs)
        return shortest, 0
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", _neighbour_probe(atoms, largest_r_in), largest_r_in)
    symbols = np.array(atoms.get_chemical_symbols())
    r_in = np.array([inner_cutoffs.get((a, b), 0.0) for a, b in zip(symbols[i], symbols[j])])
    return shortest, int((d < r_in).sum() // 2)


def _neighbour_probe(atoms: Atoms, reach: float) -> Atoms:
    """``atoms`` as ASE's neighbour list takes them: a cluster without a full cell is centred in a
    box with more than ``reach`` of vacuum."""
    if np.any(atoms.pbc) or atoms.cell.rank == 3:
        return atoms
    probe = atoms.copy()
    probe.center(vacuum=reach + 1.0)
    return probe


def closest_pair_below(atoms: Atoms, threshold: float):
    """The closest pair (i, j, distance) of atoms nearer than ``threshold`` Å, or None."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", _neighbour_probe(atoms, threshold), threshold)
    if len(d) == 0:
        return None
    k = int(np.argmin(d))
    a, b = sorted((int(i[k]), int(j[k])))
    return a, b, float(d[k])




def write_extxyz(path: Path, atoms: list[Atoms], name: Optional[Path] = None) -> None:
    """Write structures as extxyz to ``path``, compressed as the suffix of ``name`` (default
    ``path``) says: ``.gz``, ``.bz2``, ``.xz``, or plain text. An empty list writes an empty file."""

    import ase.io

    with open_with_compression(path, "w", name) as f:
        if atoms:
            ase.io.write(f, atoms, format="extxyz")


def write_extxyz_atomic(path: Path, atoms: list[Atoms]) -> None:
    """:func:`write_extxyz` through a temporary name and a rename."""
    with atomic_output(path) as tmp:
        write_extxyz(tmp, atoms, name=path)


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
