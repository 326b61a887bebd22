"""Small EMT-labelled datasets for tests, demos and benchmarks (ASE's EMT stands in for DFT).

EMT knows Cu, Al, Ni, Pd, Ag, Pt and Au; it is cheap, so a few hundred structures label in
seconds. The structures are deterministic for a given seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc111
from ase.build import bulk as ase_bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Icosahedron
from ase.data import atomic_numbers, reference_states


def label_with_emt(structures: Sequence[Atoms]) -> list[Atoms]:
    """Copies of ``structures`` with EMT energy, forces and stress as single-point results."""
    labelled = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = EMT()
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        results = {"energy": energy, "forces": forces}
        if atoms.pbc.all():
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        labelled.append(atoms)
    return labelled


@dataclass(frozen=True)
class FccCells:
    """``n`` cubic fcc cells of ``element`` (4 atoms × ``repeat``), each with a random isotropic
    strain (uniform in ±``strain``) and rattled atoms (normal, ``rattle`` Å), tagged ``config_type``."""

    element: str = "Cu"
    n: int = 12
    seed: int = 0
    strain: float = 0.03
    rattle: float = 0.05
    repeat: Sequence[int] = (1, 1, 1)
    config_type: str = "near_equilibrium"

    def build(self) -> list[Atoms]:
        rng = np.random.default_rng(self.seed)
        a0 = bulk(self.element, "fcc", cubic=True).cell.lengths()[0]
        cells = []
        for _ in range(self.n):
            atoms = bulk(self.element, "fcc", a=a0 * (1 + rng.uniform(-self.strain, self.strain)),
                         cubic=True).repeat(self.repeat)
            atoms.positions += rng.normal(0.0, self.rattle, atoms.positions.shape)
            atoms.info["config_type"] = self.config_type
            cells.append(atoms)
        return cells


def fcc_cells(element: str = "Cu", **options) -> list[Atoms]:
    """The :class:`FccCells` of ``element`` with ``options`` (``n``, ``seed``, ``strain``,
    ``rattle``, ``repeat``, ``config_type``)."""
    return FccCells(element, **options).build()


def emt_dataset(element: str = "Cu", n: int = 12, seed: int = 0, **kwargs) -> list[Atoms]:
    """``n`` EMT-labelled fcc cells of ``element`` (see :func:`fcc_cells`)."""
    return label_with_emt(fcc_cells(element, n=n, seed=seed, **kwargs))


# ----------------------------------------------------------------------------- unlabelled pools
def _fcc_lattice_constant(element: str) -> float:
    """The fcc lattice constant of ``element``; for an element whose own lattice is bcc or hcp (Mo,
    Mg), the fcc one with the same nearest-neighbour distance."""

    reference = reference_states[atomic_numbers[element]] or {}
    if reference.get("symmetry") == "bcc":
        return reference["a"] * np.sqrt(3) / 2 * np.sqrt(2)
    if reference.get("symmetry") == "hcp":
        return reference["a"] * np.sqrt(2)
    return ase_bulk(element, "fcc", cubic=True).cell.lengths()[0]


def _bulk_cell(element: str, structure: str, rng, strain: float, rattle: float) -> Atoms:
    a_fcc = _fcc_lattice_constant(element)
    if structure == "fcc":
        atoms = ase_bulk(element, "fcc", a=a_fcc, cubic=True).repeat((2, 2, 2))
    elif structure == "bcc":  # same nearest-neighbour distance as fcc
        atoms = ase_bulk(element, "bcc", a=a_fcc / np.sqrt(2) * 2 / np.sqrt(3), cubic=True).repeat((2, 2, 4))
    elif structure == "hcp":
        atoms = ase_bulk(element, "hcp", a=a_fcc / np.sqrt(2)).repeat((2, 2, 4))
    else:
        raise ValueError(f"unknown bulk structure '{structure}'")
    atoms.set_cell(atoms.cell * (1 + rng.uniform(-strain, strain)), scale_atoms=True)
    atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
    return atoms


def family_structure(family: str, rng, element: str = "Cu", alloy_element: str = "Al", strain: float = 0.03,
                     rattle: float = 0.05) -> Atoms:
    """One unlabelled structure of a family: ``fcc``, ``bcc``, ``hcp`` (32-atom cells), ``vacancy``
    (fcc with one atom removed), ``alloy`` (fcc, a random fraction of ``alloy_element``), ``slab``
    (fcc(111), vacuum along z, mixed pbc) or ``cluster`` (a small cluster in vacuum, no pbc)."""

    if family in ("fcc", "bcc", "hcp"):
        atoms = _bulk_cell(element, family, rng, strain, rattle)
    elif family == "vacancy":
        atoms = _bulk_cell(element, "fcc", rng, strain, rattle)
        del atoms[int(rng.integers(len(atoms)))]
    elif family == "alloy":
        atoms = _bulk_cell(element, "fcc", rng, strain, rattle)
        symbols = np.array(atoms.get_chemical_symbols())
        symbols[rng.random(len(atoms)) < rng.uniform(0.1, 0.5)] = alloy_element
        atoms.set_chemical_symbols(symbols.tolist())
    elif family == "slab":
        atoms = fcc111(element, (2, 2, 4), vacuum=6.0)
        atoms.info.pop("adsorbate_info", None)
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
    elif family == "cluster":
        atoms = Icosahedron(element, noshells=2)
        atoms.set_cell(np.eye(3) * 14.0)
        atoms.center()
        atoms.pbc = False
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
    else:
        raise ValueError(f"unknown family '{family}'")
    atoms.info["config_type"] = family
    return atoms


FAMILIES = ("fcc", "bcc", "hcp", "vacancy", "alloy", "slab", "cluster")


def unlabelled_pool(n: int, families: Sequence[str] = FAMILIES, seed: int = 0, **kwargs) -> list[Atoms]:
    """``n`` unlabelled structures drawn from ``families`` in turn (see :func:`family_structure`)."""
    rng = np.random.default_rng(seed)
    return [family_structure(families[i % len(families)], rng, **kwargs) for i in range(n)]
