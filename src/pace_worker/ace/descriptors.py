"""ACE descriptors of whole structures (DIRECT's encoder), chunk by chunk on workers.

The feature of a structure is, for each element of the basis in order, the mean of the
B-projections of its atoms of that element (zeros when the element is absent), followed by
the composition (fraction of atoms per element); float32. These are the functions a
potential on this basis is linear in, so structures that look alike to them look alike to
the potential.

Which basis
-----------
* With a potential (``--potential`` / ``direct_sample.potential``): its B-basis, i.e. its
  fitted radial functions.
* Without: an unfitted basis for the elements found in the pool, built by pyace
  (``create_multispecies_basis_config``) with pacemaker's default embedding and radial basis
  (:func:`pace_worker.ace.default_basis.default_potential`) and, from ``direct_sample.descriptor``:
  ``cutoff`` 5 Å, ``nradmax_by_orders [8, 4, 2]``, ``lmax_by_orders [0, 6, 2]``, at most
  ``functions_per_element`` 128 (a unary basis has 104). The angular budget goes to pair
  (rank-2) functions up to l = 6 — they contain Steinhardt-like bond-order parameters (q4, q6),
  which tell fcc, hcp and bcc apart even under ±3 % strain; pacemaker's fitting template (l ≤ 3
  at rank 2) mostly sees volume. The radial basis is pacemaker's initial one: simplified Bessel
  functions (``SBessel``) with the radial coefficients pyace gives an unfitted basis — nothing
  fitted enters. B-projections do not depend on the expansion coefficients, only on the radial
  basis, so a potential's basis gives the same kind of features with its fitted radial functions.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ase import Atoms

from pace_worker.ace.activeset import basis_function_counts, load_bbasis
from pace_worker.ace.default_basis import default_potential
from pace_worker.ace.projections import BProjector
from pace_worker.config import DescriptorSettings
from pace_worker.errors import InputError
from pace_worker.files.frames import PoolChunk, read_checked
from pace_worker.parallel import worker_state
from pace_worker.stack import import_pyace

STATE = "descriptor basis"  # (BProjector, elements in feature order, column offsets) of this process


def write_unfitted_basis(elements: Sequence[str], settings: DescriptorSettings, path: Path) -> None:
    """Write the unfitted descriptor B-basis for ``elements`` as a pacemaker B-basis YAML."""
    import_pyace()
    from pyace import create_multispecies_basis_config

    potential = default_potential(sorted(elements), settings.cutoff, settings.functions_per_element)
    shape = {"nradmax_by_orders": list(settings.nradmax_by_orders), "lmax_by_orders": list(settings.lmax_by_orders)}
    potential["functions"] = {"number_of_functions_per_element": settings.functions_per_element, "ALL": shape}
    create_multispecies_basis_config(potential).save(str(path))


def load_basis(basis_yaml: str) -> None:
    """Worker initializer: read the B-basis and its feature layout once per process."""
    def build():
        bbasis = load_bbasis(Path(basis_yaml))
        elements = list(bbasis.elements_name)
        counts = basis_function_counts(bbasis)
        # feature columns of element i: offsets[i]:offsets[i + 1]; composition after offsets[-1]
        offsets = np.concatenate([[0], np.cumsum([int(counts[el]) for el in elements])]).astype(int)
        return BProjector(bbasis), elements, offsets

    worker_state.load(STATE, str(basis_yaml), build)


def feature_layout(basis_yaml: str) -> tuple[list[str], np.ndarray]:
    """``(elements, offsets)`` of the feature vector: element i's mean B-projections are columns
    ``offsets[i]:offsets[i + 1]``, the composition fractions the columns after ``offsets[-1]``."""
    load_basis(basis_yaml)
    _, elements, offsets = worker_state.loaded(STATE)
    return list(elements), np.asarray(offsets)


def structure_features(structures: Sequence, first_index: int = 0, what: str = "input",
                       environments: Optional[Sequence] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(features [n, Σ n_funcs + n_elements] float32, usable [n] bool)`` of ``structures``.

    A structure with an element the basis lacks is not usable (its row is zeros); a structure
    without atoms is an input error. ``environments``: pyace's environment of each structure
    where already built (:meth:`BProjector.checked_environments`; None where not usable).
    """
    projector, elements, offsets = worker_state.loaded(STATE)
    n_features = int(offsets[-1]) + len(elements)
    features = np.zeros((len(structures), n_features), dtype=np.float32)
    usable = np.zeros(len(structures), dtype=bool)
    species = [projector.species(atoms) for atoms in structures]
    for k, atoms in enumerate(structures):
        if len(atoms) == 0:
            raise InputError(f"{what}: structure {first_index + k} has no atoms; remove it from the pool")
        usable[k] = bool((species[k] >= 0).all())
    rows = np.flatnonzero(usable)
    if len(rows):
        chosen = [structures[k] if environments is None else environments[k] for k in rows]
        proj, owner = projector(chosen)  # slabs and wires are made fully periodic there
        for st, block in proj.items():
            if not len(block):
                continue
            sums = sums_by_owner(block, owner[st], len(chosen))
            counts = np.bincount(owner[st], minlength=len(chosen))
            present = counts > 0
            features[rows[present], offsets[st]:offsets[st + 1]] = sums[present] / counts[present, None]
        n_atoms = np.array([len(species[r]) for r in rows])
        counts = np.bincount(np.repeat(np.arange(len(rows)), n_atoms) * len(elements)
                             + np.concatenate([species[r] for r in rows]),
                             minlength=len(rows) * len(elements)).reshape(len(rows), len(elements))
        features[rows, offsets[-1]:] = counts / n_atoms[:, None]  # composition fractions
    return features, usable


def sums_by_owner(block: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """``[n, columns]``: the rows of ``block`` summed per ``owner`` (non-decreasing: each
    owner's rows together), each owner's rows added one after another in order: the numbers of
    ``np.add.at(np.zeros(...), owner, block)``, bit for bit, in one array operation per row
    position instead of one per row."""
    sums = np.zeros((n, block.shape[1]))
    position = np.arange(len(owner)) - np.searchsorted(owner, owner)  # row's place among its owner's rows
    for j in range(int(position.max()) + 1 if len(position) else 0):
        at = position == j
        sums[owner[at]] += block[at]
    return sums


@functools.lru_cache(maxsize=1024)
def metal_formula(numbers: bytes) -> str:
    """ASE's ``get_chemical_formula(mode="metal")`` of atoms with these atomic numbers (int64
    bytes); a pool repeats a few compositions, so each is worked out once."""
    return Atoms(numbers=np.frombuffer(numbers, dtype=np.int64)).get_chemical_formula(mode="metal")


@dataclass
class FeatureBlock:
    """What a worker sends back for a chunk of the pool (see :func:`features_chunk`)."""

    first_index: int
    features: np.ndarray        # [n, Σ n_funcs + n_elements] float32; zeros where not usable
    usable: np.ndarray          # [n] bool
    n_atoms: np.ndarray         # [n] int64 (0 for a structure that could not be read)
    periodic_dims: np.ndarray   # [n] int8: periodic directions (3 bulk, 2 slab, 1 wire, 0 cluster/molecule)
    problems: list              # why structure k could not be used at all, else None
    categories: list            # info[color_by] (default config_type), else the chemical formula


def features_chunk(chunk: PoolChunk) -> FeatureBlock:
    """Worker: the :class:`FeatureBlock` of a chunk of the pool; ``problems[k]`` comes from
    :func:`pace_worker.files.frames.read_checked`; chunk options ``min_distance``, ``color_by``."""
    projector, _, _ = worker_state.loaded(STATE)
    checked, environments = projector.checked_environments(read_checked(chunk), chunk.options.get("min_distance", 0.0))
    label = f"{chunk.what} '{chunk.path}'" if chunk.path else chunk.what
    good = [k for k, (atoms, _) in enumerate(checked) if atoms is not None]
    block, ok = structure_features([checked[k][0] for k in good], chunk.first_index, label,
                                   [environments[k] for k in good])
    features = np.zeros((len(checked), block.shape[1]), dtype=np.float32)
    usable = np.zeros(len(checked), dtype=bool)
    features[good], usable[good] = block, ok
    n_atoms = np.array([len(a) if a is not None else 0 for a, _ in checked], dtype=np.int64)
    periodic = np.array([int(a.pbc.sum()) if a is not None else 0 for a, _ in checked], dtype=np.int8)
    key = chunk.options.get("color_by") or "config_type"
    categories = [None if a is None else str(a.info[key]) if key in a.info
                  else metal_formula(np.asarray(a.numbers, dtype=np.int64).tobytes()) for a, _ in checked]
    return FeatureBlock(chunk.first_index, features, usable, n_atoms, periodic,
                        [problem for _, problem in checked], categories)
