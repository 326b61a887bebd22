"""Small EMT-labelled datasets for tests, demos and benchmarks (ASE's EMT stands in for DFT).

EMT knows Cu, Al, Ni, Pd, Ag, Pt and Au; it is cheap, so a few hundred structures label in
seconds. The structures are deterministic for a given seed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


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


def fcc_cells(element: str = "Cu", n: int = 12, seed: int = 0, strain: float = 0.03, rattle: float = 0.05,
              repeat: Sequence[int] = (1, 1, 1), config_type: str = "near_equilibrium") -> list[Atoms]:
    """``n`` cubic fcc cells (4 atoms × repeat) with random isotropic strain and rattled atoms."""
    rng = np.random.default_rng(seed)
    a0 = bulk(element, "fcc", cubic=True).cell.lengths()[0]
    cells = []
    for i in range(n):
        atoms = bulk(element, "fcc", a=a0 * (1 + rng.uniform(-strain, strain)), cubic=True).repeat(repeat)
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
        atoms.info["config_type"] = config_type
        cells.append(atoms)
    return cells


def emt_dataset(element: str = "Cu", n: int = 12, seed: int = 0, **kwargs) -> list[Atoms]:
    """``n`` EMT-labelled fcc cells of ``element`` (see :func:`fcc_cells`)."""
    return label_with_emt(fcc_cells(element, n=n, seed=seed, **kwargs))
