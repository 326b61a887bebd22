"""Evaluating a potential on structures with pyace's evaluator, chunk by chunk.

:func:`load_potential` is the worker initializer (the potential is read once per process, into
the objects ``PyACECalculator`` builds: :class:`LoadedPotential`);
:func:`predict_chunk` turns a chunk of structures into :class:`Prediction` objects (energy,
forces, stress, per-atom γ when an active set is loaded). :func:`predict` runs the whole list
through the shared :class:`~pace_worker.parallel.executor.ChunkExecutor`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ase import Atoms

from pace_worker.ace.projections import atomic_environment, give_active_set, species_indices
from pace_worker.files.structures import fully_periodic_or_not, has_pair_closer_than
from pace_worker.parallel import worker_state
from pace_worker.parallel.executor import ChunkExecutor
from pace_worker.stack import import_pyace, import_pyace_core

STATE = "calculator"  # the LoadedPotential of this process
# A C-tilde potential (.yace/.ace) is evaluated by pyace's recursive evaluator, in its recursive mode
# (what LAMMPS's ``pair_style pace`` uses by default): 14-26 % faster than ``PyACECalculator``'s
# default product evaluator on 40-444 functions here, energies and forces equal to ~1e-16 relative
# (6e-14 eV, 6e-14 eV/Å measured). A B-basis (.yaml) has one evaluator (``ACEBEvaluator``).
CALCULATOR_OPTIONS = {"recursive_evaluator": True, "recursive": True}


@dataclass
class Prediction:
    energy: float
    forces: np.ndarray
    stress: Optional[np.ndarray]
    gamma: Optional[np.ndarray]  # per atom; None without an active set
    shortest_distance: float = float("inf")  # Å, from pyace's neighbour list; inf: none within ``reach``
    reach: float = 0.0                        # Å, the potential's cutoff (that list's reach)


@dataclass
class LoadedPotential:
    """What ``PyACECalculator(path, **CALCULATOR_OPTIONS)`` (and its ``set_active_set``: here the
    matrices of our reading of the ``.asi``, :func:`pace_worker.ace.projections.give_active_set`)
    builds and ``predict_chunk`` uses, from pyace's compiled modules only (pyace's Python layer is
    not imported: ~0.6 s less before the workers start): the basis (``ACEBBasisSet`` of a .yaml,
    ``ACECTildeBasisSet`` of a .yace/.ace), the calculator's evaluator for it (``ACEBEvaluator``; the
    recursive ``ACERecursiveEvaluator``, see ``CALCULATOR_OPTIONS``) and the ``ACECalculator`` that runs it."""

    basis: object
    evaluator: object
    ace: object
    with_gamma: bool = False  # an active set is loaded (a B-basis only): γ per atom

    @classmethod
    def load(cls, potential: str, asi: Optional[str] = None) -> "LoadedPotential":
        import_pyace_core()
        from pyace.basis import ACEBBasisSet, ACECTildeBasisSet
        from pyace.calculator import ACECalculator
        from pyace.evaluator import ACEBEvaluator, ACECTildeEvaluator, ACERecursiveEvaluator

        potential = str(potential)
        if potential.endswith(".yaml"):
            basis = ACEBBasisSet(potential)
            evaluator = ACEBEvaluator(basis)
        elif potential.endswith((".ace", ".yace")):
            basis = ACECTildeBasisSet(potential)
            if CALCULATOR_OPTIONS["recursive_evaluator"]:  # as PyACECalculator chooses by these options
                evaluator = ACERecursiveEvaluator(basis)
                evaluator.set_recursive(CALCULATOR_OPTIONS["recursive"])
            else:
                evaluator = ACECTildeEvaluator(basis)
        else:
            raise ValueError("Unrecognized file format: " + potential)
        ace = ACECalculator()
        ace.set_evaluator(evaluator)
        loaded = cls(basis, evaluator, ace)
        if asi is not None:
            if not isinstance(evaluator, ACEBEvaluator):
                raise ValueError("an active set works only with a B-basis potential (.yaml)")
            from pace_worker.ace.activeset import read_inverse_matrices  # (activeset imports this module)

            give_active_set(evaluator, basis, read_inverse_matrices(Path(asi)))
            loaded.with_gamma = True
        return loaded

    @property
    def cutoff(self) -> float:
        return float(self.basis.cutoffmax)


def make_calculator(potential: str, asi: Optional[str] = None):
    """pyace's ASE calculator of a potential, with the evaluator the commands use (for MD and as the
    reference of the tests)."""
    import_pyace()
    from pyace import PyACECalculator

    calc = PyACECalculator(str(potential), **CALCULATOR_OPTIONS)
    if asi is not None:
        calc.set_active_set(str(asi))
    return calc


def load_potential(potential: str, asi: Optional[str] = None):
    """Worker initializer: the calculator of this process (loaded once; worker processes forked
    after the parent loaded it inherit it and skip reading the potential again)."""
    key = (str(potential), None if asi is None else str(asi))
    return worker_state.load(STATE, key, lambda: LoadedPotential.load(*key))


def predict_chunk(structures: Sequence[Atoms], refuse_closer_than: float = 0.0) -> list[Optional[Prediction]]:
    """Energy, forces, stress and γ of each structure: the calls and arithmetic of
    ``PyACECalculator.calculate`` (its atomic environment, ``ACECalculator.compute``, the virial in
    ASE's Voigt order over the volume) without ASE's calculator machinery, which copied every
    structure twice (the same numbers; ~20 % of the time per 32-atom cell). The environment is
    :func:`pace_worker.ace.projections.atomic_environment` (pyace's C++ builder given species
    indices: the same environment, ~15 % faster than ``get_atomic_env``'s Python loops). A
    structure of two or more atoms with a pair closer than ``refuse_closer_than`` Å (read from
    that environment's neighbour list when it reaches so far, before pyace evaluates anything:
    :func:`pace_worker.files.structures.has_pair_closer_than`) gets None."""
    calc = worker_state.loaded(STATE)
    with_gamma = calc.with_gamma
    species_of_number = species_indices({el: i for i, el in enumerate(calc.basis.elements_name)})
    reach = calc.cutoff
    out = []
    for original in structures:
        # pyace refuses slabs and wires (mixed pbc): the same atoms, fully periodic with a cutoff
        # of vacuum, have the same environments; their stress (of a changed cell) is not reported
        atoms = fully_periodic_or_not(original, reach)
        made_periodic = atoms is not original
        env = atomic_environment(atoms, species_of_number, reach)
        shortest = float(env.get_minimal_nn_distance())  # pyace: 1000 without a neighbour
        if has_pair_closer_than(original, refuse_closer_than, (shortest, reach)):
            out.append(None)
            continue
        calc.ace.compute(env, compute_projections=with_gamma)  # γ needs them; energy and forces do not
        stress = None
        cell = atoms.cell.array
        if not made_periodic and cell.any(1).all():  # three lattice vectors: ASE's cell.rank == 3
            stress = np.array(calc.ace.virial)[[0, 1, 2, 5, 4, 3]] / abs(np.linalg.det(cell))  # ÷ get_volume()
        out.append(Prediction(energy=float(np.array(calc.ace.energy)),
                              forces=np.array(calc.ace.forces, dtype=np.float64), stress=stress,
                              gamma=np.array(calc.ace.gamma_grade, dtype=np.float64) if with_gamma else None,
                              shortest_distance=shortest if shortest < reach else float("inf"), reach=reach))
    return out


def predict(potential: Path, structures: Sequence[Atoms], asi: Optional[Path] = None,
            executor: Optional[ChunkExecutor] = None) -> list[Prediction]:
    """Predictions for all structures, in order."""
    executor = executor or ChunkExecutor()
    results: list[Prediction] = []
    for chunk in executor.map(predict_chunk, list(structures), initializer=load_potential,
                              initargs=(str(potential), str(asi) if asi else None), description="evaluating"):
        results.extend(chunk)
    return results
