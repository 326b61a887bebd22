"""B-basis projections of many structures with one reused pyace calculator.

:class:`BProjector` returns what ``pyace.activelearning.compute_B_projections(bbasis,
structures, structure_ind_list=range(n))`` returns — ``{species: [atoms, n_funcs]}`` and
``{species: owning structure of each row}``, rows in structure and atom order — from the same
pyace C++ calls (``build_atomic_env``, ``ACECalculator.compute(..., compute_projections=True)``).
Here the evaluator is built once (pyace's function builds one per call) and each structure's
rows are taken per species in one array operation (pyace's copies every atom's row in Python);
the atomic environment is pyace's ``build_atomic_env`` given species indices directly, which
skips ``aseatoms_to_atomicenvironment``'s per-neighbour symbol lookup. Results are identical
(tested); ``bench/sample_vs_pace_select.py`` measures the whole command against pyace's tools.
Given an active set, the same ``compute`` also grades each atom's γ (pyace's own, as
``PyACECalculator`` reports it), and the projections need to be read out only where they are kept.
A slab or wire (mixed ``pbc``, which pyace refuses) is scored as the same structure made fully
periodic with at least a cutoff of vacuum (:func:`pace_worker.files.structures.fully_periodic_or_not`):
the same atomic environments.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from pace_worker.files.structures import pyace_environment, too_close_problem


def species_indices(index_of: dict) -> np.ndarray:
    """A basis's species index of each atomic number (-1: not in the basis), from its
    ``{element: index}`` map (pyace's calculator keys it by bytes, its B-basis by str)."""
    species_of_number = np.full(len(chemical_symbols), -1)
    for element, index in index_of.items():
        species_of_number[atomic_numbers[element.decode() if isinstance(element, bytes) else element]] = index
    return species_of_number


def atomic_environment(atoms, species_of_number: np.ndarray, cutoff: float):
    """pyace's atomic environment of ``atoms`` (what ``aseatoms_to_atomicenvironment`` builds,
    from the same C++ ``build_atomic_env``, given species indices directly: its per-neighbour
    Python lookups skipped); a slab or wire is made fully periodic first (pyace refuses them)."""
    species = species_of_number[atoms.numbers]
    if (species < 0).any():
        raise ValueError(f"elements {sorted(set(atoms[species < 0].get_chemical_symbols()))} are not in the basis")
    return pyace_environment(atoms, species, cutoff)


def give_active_set(evaluator, bbasis, inverse: dict) -> None:
    """Give pyace's ``ACEBEvaluator`` of ``bbasis`` an active set: its ``{element: A⁻¹}`` matrices
    (our reading of the ``.asi``, :func:`pace_worker.ace.activeset.read_inverse_matrices`), in the
    basis's element order — the matrices ``PyACECalculator.set_active_set`` has pyace read from the
    file, which give the same γ bit for bit (``tests/test_gamma.py``). Every γ of the worker is
    graded by an evaluator given its active set this way."""
    evaluator.set_active_set([inverse[name] for name in bbasis.elements_name])


def function_counts(bbasis) -> list[int]:
    """The number of B-functions of each species of a loaded B-basis (``ACEBBasisSet``), in species
    order: what ``pyace.activelearning.compute_number_of_functions`` returns for it (its rank-1 and
    higher-rank functions), without importing pyace's Python layer (tested equal)."""
    return [len(rank1) + len(higher) for rank1, higher in zip(bbasis.basis_rank1, bbasis.basis)]


class BProjector:
    """``projector(structures) -> (projections, owner)`` for one B-basis (``ACEBBasisSet``)."""

    def __init__(self, bbasis, active_set_inverse: Optional[dict] = None):
        """``active_set_inverse``: ``{element: A⁻¹}`` of an active set (an ``.asi`` as loaded by
        :func:`pace_worker.ace.activeset.load_active_set`); with it, each computation also grades
        every atom (:meth:`graded_blocks`)."""
        from pyace.calculator import ACECalculator
        from pyace.evaluator import ACEBEvaluator

        self.bbasis = bbasis
        self._evaluator = ACEBEvaluator(bbasis)  # the calculator keeps a reference to it
        self._grading = active_set_inverse is not None
        if self._grading:
            give_active_set(self._evaluator, bbasis, active_set_inverse)
        self._calculator = ACECalculator(self._evaluator)
        self._n_functions = function_counts(bbasis)
        self._species_of_number = species_indices(bbasis.elements_to_index_map)

    def environment(self, atoms):
        """pyace's atomic environment of ``atoms`` (:func:`atomic_environment`)."""
        return atomic_environment(atoms, self._species_of_number, self.bbasis.cutoffmax)

    def species(self, atoms) -> np.ndarray:
        """The basis's species index of each atom (-1 for an element the basis lacks)."""
        return self._species_of_number[atoms.numbers]

    def blocks(self, env, species: Optional[np.ndarray] = None) -> dict[int, np.ndarray]:
        """``{species index: B-projections [its atoms in order, n_funcs]}`` of one environment,
        species in increasing order; ``species``: its atoms' species indices if known
        (:meth:`species`; else read from the environment)."""
        self._calculator.compute(env, compute_projections=True)
        return self._computed_blocks(env, species)

    def graded_blocks(self, env, keep_above: Optional[float] = None,
                      species: Optional[np.ndarray] = None) -> tuple[np.ndarray, Optional[dict[int, np.ndarray]]]:
        """``(per-atom γ, blocks or None)`` of one environment, from one ``compute`` (given an active
        set): γ is pyace's own, ``ACECalculator.gamma_grade`` (bit for bit what ``PyACECalculator``
        reports as ``results["gamma"]``; its value is
        :func:`pace_worker.algorithms.extrapolation_grade.extrapolation_grades`' max |b A⁻¹|); the
        :meth:`blocks` are read out only when the max γ is at least ``keep_above`` (None: always).
        Reading them is a tenth of pyace's time per structure (its list of lists of Python floats)
        and most structures of a pool need only γ."""
        if not self._grading:
            raise ValueError("γ needs an active set: BProjector(bbasis, active_set_inverse)")
        self._calculator.compute(env, compute_projections=True)  # γ is graded on the projections
        gamma = np.array(self._calculator.gamma_grade, dtype=np.float64)
        if keep_above is not None and not gamma.max() >= keep_above:
            return gamma, None
        return gamma, self._computed_blocks(env, species)

    def _computed_blocks(self, env, species: Optional[np.ndarray]) -> dict[int, np.ndarray]:
        """:meth:`blocks` of the environment ``compute`` was last called with."""
        rows = self._calculator.projections
        if species is None:
            species = np.asarray(env.species_type[:env.n_atoms_real])
        present = np.unique(species)
        if len(present) == 1:  # rows of one species have one length: one conversion
            return {int(present[0]): np.asarray(rows, dtype=np.float64)}
        return {int(st): np.array([rows[i] for i in np.flatnonzero(species == st)], dtype=np.float64)
                for st in present}

    def checked_environments(self, checked: Sequence[tuple], min_distance: float) -> tuple[list, list]:
        """``(checked, environments)``: :func:`pace_worker.files.frames.read_checked`'s
        ``(structure, problem)`` pairs (read with no distance rule) with the ``min_distance`` rule
        applied, and pyace's environment of each structure that is still usable and has only
        elements of the basis (None for the others). The rule reads the shortest distance from that
        environment (one neighbour list, not two) when the cutoff reaches ``min_distance``;
        structures with other elements get their own short list. The problems are those of
        :func:`pace_worker.files.structures.geometry_problem`."""
        result, environments = [], []
        reach = float(self.bbasis.cutoffmax)
        for atoms, problem in checked:
            env = None
            if atoms is not None:
                if (self.species(atoms) >= 0).all():
                    env = self.environment(atoms)
                known = (float(env.get_minimal_nn_distance()), reach) if env is not None else None
                close = too_close_problem(atoms, min_distance, known)
                if close is not None:
                    atoms, problem, env = None, f"{close[0]}: {close[1]}", None
            result.append((atoms, problem))
            environments.append(env)
        return result, environments

    def __call__(self, structures: Sequence) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        blocks: dict[int, list] = {st: [] for st in range(len(self._n_functions))}
        owners: dict[int, list] = {st: [] for st in range(len(self._n_functions))}
        for index, atoms in enumerate(structures):
            env = atoms if hasattr(atoms, "species_type") else self.environment(atoms)
            for st, block in self.blocks(env).items():
                blocks[st].append(block)
                owners[st].append(np.full(len(block), index))
        projections = {st: np.concatenate(b) if b else np.zeros((0, self._n_functions[st]))
                       for st, b in blocks.items()}
        owner = {st: np.concatenate(o) if o else np.zeros(0, dtype=int) for st, o in owners.items()}
        return projections, owner
