"""A potential evaluated on labelled structures, chunk by chunk on the workers.

:func:`evaluate_chunk` takes a chunk of a test set's file (a
:class:`~pace_worker.files.frames.PoolChunk`: parsed on the worker, each structure's labels
checked by :func:`~pace_worker.files.structures.checked_labels` and its elements against the
potential's) or of structures already read and checked (:class:`LabelledChunk`: ``train``'s
data, a pickled test set) and gives the chunk's :class:`EvaluatedStructures`: per structure, as
columns, its energy label, the numbers its errors are computed from
(:class:`~pace_worker.algorithms.error_metrics.StructureErrorColumns`: predicted energy, sums of
the force errors per element, ...), γ, its shortest interatomic distance and its pairs inside the
core repulsion; and the forces of an evenly spaced sample of structures for the parity plot
(:class:`ForceSample`). Only these columns go back to the main process, never a structure or all
its forces, so a test set is read, checked and evaluated in parallel, and the main process holds a
few numbers per structure (at 10⁵ 32-atom cells: ~15 MB, where every force array took ~0.7 GB).
:func:`evaluated_structures` runs a whole test set through a
:class:`~pace_worker.parallel.executor.ChunkExecutor`, in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from ase.data import atomic_numbers

from pace_worker.ace.predictions import STATE, Prediction, load_potential, predict_chunk
from pace_worker.algorithms.error_metrics import StructureErrorColumns
from pace_worker.errors import InputError
from pace_worker.files.compression import is_compressed
from pace_worker.files.frames import PoolChunk, frame_offsets, pool_chunks
from pace_worker.files.structures import (
    LabelKeys,
    LabelledStructures,
    check_structure_elements,
    checked_labels,
    found_labels,
    shortest_distance_and_core,
)
from pace_worker.parallel import worker_state
from pace_worker.parallel.executor import ChunkExecutor
from pace_worker.stack import BackgroundImports

FORCE_SAMPLE_STRUCTURES = 4000  # structures of a test set whose forces come back for the parity plot, about
FORCE_SAMPLE_ATOMS = 100_000    # atoms of the sample at most (then every other one of its structures is dropped)


@dataclass(frozen=True)
class TestSetFile:
    """An extxyz test set read by the workers, with how its structures are checked."""

    path: Path
    label_keys: LabelKeys
    min_distance: float                     # Å: closer atoms are an error
    elements: tuple[str, ...]               # the potential's
    what: str = "test set"                  # in messages


@dataclass(frozen=True)
class EvaluationSettings:
    """What every chunk needs besides its structures."""

    group_by: str = "config_type"                   # the info key whose values group the errors
    inner_cutoffs: dict = field(default_factory=dict)  # {(A, B): r_in} of the potential
    force_sample_every: int = 0                     # the forces of every n-th structure come back; 0: none


@dataclass
class ForceSample:
    """The reference and predicted forces ([atoms, 3], eV/Å) and atomic numbers of the structures
    whose index is a multiple of ``every`` (those with forces), for the force parity plot."""

    every: int
    structures: np.ndarray   # their indices
    atoms: np.ndarray        # atoms of each
    numbers: np.ndarray      # [atoms]
    reference: np.ndarray    # [atoms, 3]
    predicted: np.ndarray    # [atoms, 3]

    @classmethod
    def of(cls, every: int, first_index: int, numbers: Sequence[np.ndarray], reference: Sequence[Optional[np.ndarray]],
           predicted: Sequence[np.ndarray]) -> "ForceSample":
        """The sample of a chunk whose first structure has index ``first_index`` (``every`` 0: none)."""
        kept = [k for k, r in enumerate(reference) if every and r is not None and (first_index + k) % every == 0]
        return cls(every, np.array([first_index + k for k in kept], dtype=np.int64),
                   np.array([len(numbers[k]) for k in kept], dtype=np.int64),
                   np.concatenate([np.asarray(numbers[k], dtype=np.int64) for k in kept] or [np.zeros(0, np.int64)]),
                   np.concatenate([np.asarray(reference[k], dtype=float) for k in kept] or [np.zeros((0, 3))]),
                   np.concatenate([np.asarray(predicted[k], dtype=float) for k in kept] or [np.zeros((0, 3))]))

    def __len__(self) -> int:
        return len(self.structures)

    def joined(self, other: "ForceSample") -> "ForceSample":
        """This sample and the next chunk's, of this sample's spacing."""
        other = other.keeping(self.every)
        return ForceSample(self.every, *(np.concatenate([getattr(self, name), getattr(other, name)])
                                         for name in ("structures", "atoms", "numbers", "reference", "predicted")))

    def keeping(self, every: int) -> "ForceSample":
        """The structures of the sample whose index is a multiple of ``every`` (a multiple of its own)."""
        if every == self.every:
            return self
        keep = self.structures % every == 0
        atoms = np.repeat(keep, self.atoms)
        return ForceSample(every, self.structures[keep], self.atoms[keep], self.numbers[atoms],
                           self.reference[atoms], self.predicted[atoms])

    def thinned(self, max_atoms: int) -> "ForceSample":
        """Every other structure of the sample (by index: ``every`` doubles) until it holds at most
        ``max_atoms`` atoms, or one structure."""
        sample = self
        while len(sample) > 1 and int(sample.atoms.sum()) > max_atoms:
            sample = sample.keeping(2 * sample.every)
        return sample


@dataclass
class EvaluatedStructures:
    """Labelled structures evaluated, as columns (one row per structure, in order): made on the
    workers chunk by chunk (:func:`evaluate_chunk`) and joined in order (:meth:`joined`)."""

    groups: list[str]                  # each structure's value of the group-by key
    energy: np.ndarray                 # the energy labels, as given (eV)
    errors: StructureErrorColumns      # predicted energies, force error sums, stress errors
    gamma_max: Optional[np.ndarray]    # per structure; None without an active set
    shortest_distance: np.ndarray      # Å, within the largest r_in + 3 Å; NaN: no neighbour that close
    pairs_inside_r_in: np.ndarray
    force_sample: ForceSample

    def __len__(self) -> int:
        return len(self.groups)

    @classmethod
    def joined(cls, parts: Sequence["EvaluatedStructures"], force_sample: ForceSample) -> "EvaluatedStructures":
        """Consecutive chunks' columns, in order, with the force sample gathered from them."""
        def column(name):
            values = [getattr(part, name) for part in parts]
            return None if values[0] is None else np.concatenate(values)

        return cls([g for part in parts for g in part.groups], column("energy"),
                   StructureErrorColumns.joined([part.errors for part in parts]), column("gamma_max"),
                   column("shortest_distance"), column("pairs_inside_r_in"), force_sample)


@dataclass
class LabelledChunk:
    """Structures already read and checked, with their labels ``(energy, forces, stress)``."""

    first_index: int
    atoms: list
    labels: list
    settings: EvaluationSettings

    def __len__(self) -> int:
        return len(self.atoms)


def evaluate_chunk(chunk: Union[PoolChunk, LabelledChunk]) -> EvaluatedStructures:
    """Worker: the chunk's :class:`EvaluatedStructures` (the potential is the one
    :func:`pace_worker.ace.predictions.load_potential` loaded in this process)."""
    if isinstance(chunk, PoolChunk):
        settings = chunk.options["settings"]
        structures, labels, predictions = _checked_and_predicted(chunk, chunk.options["test_set"])
    else:
        settings, structures, labels = chunk.settings, chunk.atoms, chunk.labels
        predictions = predict_chunk(structures)
    potential = worker_state.loaded(STATE)
    elements = [atomic_numbers[el] for el in potential.basis.elements_name]
    numbers = [atoms.numbers for atoms in structures]
    reference_forces = [forces for _, forces, _ in labels]
    predicted_forces = [p.forces for p in predictions]
    core = [shortest_distance_and_core(atoms, settings.inner_cutoffs, (p.shortest_distance, p.reach))
            for atoms, p in zip(structures, predictions)]
    return EvaluatedStructures(
        [str(atoms.info.get(settings.group_by, "all")) for atoms in structures],
        np.array([energy for energy, _, _ in labels], dtype=float),
        StructureErrorColumns.of(elements, numbers, [p.energy for p in predictions], reference_forces,
                                 predicted_forces, [stress for _, _, stress in labels],
                                 [p.stress for p in predictions]),
        np.array([p.gamma.max() for p in predictions]) if potential.with_gamma else None,
        np.array([np.nan if shortest is None else shortest for shortest, _ in core], dtype=float),
        np.array([pairs for _, pairs in core], dtype=np.int64),
        ForceSample.of(settings.force_sample_every, chunk.first_index, numbers, reference_forces, predicted_forces))


def _checked_and_predicted(chunk: PoolChunk, test_set: TestSetFile) -> tuple[list, list, list[Prediction]]:
    """``(structures, labels, predictions)`` of a chunk of a test set's file, each structure checked
    as :func:`_checked_labels` checks it, the first problem in that order named. The rule on atoms
    closer than ``min_distance`` reads the evaluation's own neighbour list (one list, not two);
    only a structure it flags is checked again by the reference check, which names the pair. The
    structures are dropped after this chunk, so their labels' calculators keep no copy of them
    (:func:`pace_worker.files.c_extxyz.labels_calculator`)."""
    structures = chunk.read(label_snapshots=False)
    try:
        labels = [_checked_labels(atoms, chunk, k, test_set, min_distance=0.0) for k, atoms in enumerate(structures)]
    except InputError:
        for k, atoms in enumerate(structures):  # the first problem in the reference order
            _checked_labels(atoms, chunk, k, test_set)
        raise
    predictions = predict_chunk(structures, test_set.min_distance)
    for k, prediction in enumerate(predictions):
        if prediction is None:  # a close pair: the reference check names it
            _checked_labels(structures[k], chunk, k, test_set)
            predictions[k] = predict_chunk([structures[k]])[0]  # a pair at the limit it lets through
    return structures, labels, predictions


def _checked_labels(atoms, chunk: PoolChunk, k: int, test_set: TestSetFile,
                    min_distance: Optional[float] = None) -> tuple:
    """A test structure's labels checked by :func:`checked_labels` (atoms closer than
    ``min_distance``, default the test set's), then its elements against the potential's."""
    where = f"{test_set.what} '{chunk.path}', structure {chunk.first_index + k}"
    labels = checked_labels(atoms, found_labels(atoms, test_set.label_keys), where, test_set.label_keys.energy_key,
                            test_set.min_distance if min_distance is None else min_distance)
    check_in_potential(atoms, test_set.elements, where)
    return labels


def check_in_potential(atoms, elements: Sequence[str], where: str) -> None:
    """A test structure's elements are all the potential's (``where`` names it in the error)."""
    check_structure_elements(atoms, set(elements), where, f"not in the potential (elements {sorted(elements)})",
                             "remove those structures")


def evaluated_structures(potential: Path, asi: Optional[Path], structures: Union[LabelledStructures, TestSetFile],
                         settings: EvaluationSettings, executor: ChunkExecutor,
                         meanwhile: Sequence[str] = ()) -> EvaluatedStructures:
    """Every structure of ``structures`` evaluated by ``potential`` (with γ given ``asi``), in order.
    ``meanwhile``: modules the caller needs next, imported while the workers evaluate. With
    ``settings.force_sample_every``, the forces of about :data:`FORCE_SAMPLE_STRUCTURES` evenly
    spaced structures (at most :data:`FORCE_SAMPLE_ATOMS` atoms) come back too."""
    initargs = (str(potential), str(asi) if asi else None)
    load_potential(*initargs)  # forked workers inherit it
    chunks, total = _chunks(structures, settings, executor.chunk_size)
    parts: list[EvaluatedStructures] = []
    sample: Optional[ForceSample] = None
    results = executor.map_chunks(evaluate_chunk, chunks, initializer=load_potential, initargs=initargs,
                                  description="evaluating", total=total)
    for _, part in BackgroundImports(*meanwhile).during(results, executor.runs_elsewhere(total)):
        sample = part.force_sample if sample is None else sample.joined(part.force_sample)
        sample = sample.thinned(FORCE_SAMPLE_ATOMS)
        part.force_sample = None  # the sample holds what is kept of it
        parts.append(part)
    if not sum(map(len, parts)):
        where = structures.path
        raise InputError(f"{getattr(structures, 'what', 'dataset')} '{where}' contains no structures")
    return EvaluatedStructures.joined(parts, sample)


def _chunks(structures: Union[LabelledStructures, TestSetFile], settings: EvaluationSettings,
            chunk_size: int) -> tuple[Iterator, Optional[int]]:
    if isinstance(structures, LabelledStructures):
        settings = _with_sample_spacing(settings, len(structures))
        labels = list(zip(structures.energies, structures.forces, structures.stresses or [None] * len(structures)))
        return (LabelledChunk(i, structures.atoms[i:i + chunk_size], labels[i:i + chunk_size], settings)
                for i in range(0, len(structures), chunk_size)), len(structures)
    offsets = None if is_compressed(structures.path) else frame_offsets(structures.path, structures.what)
    total = None if offsets is None else len(offsets)
    settings = _with_sample_spacing(settings, total)
    chunks = pool_chunks(structures.path, chunk_size, structures.what,
                         lambda: {"settings": settings, "test_set": structures}, offsets)
    return chunks, total


def _with_sample_spacing(settings: EvaluationSettings, total: Optional[int]) -> EvaluationSettings:
    """``settings`` whose force sample keeps about :data:`FORCE_SAMPLE_STRUCTURES` of ``total``
    structures (all of an unknown number: the main process thins the sample as it grows)."""
    if not settings.force_sample_every:
        return settings
    return replace(settings, force_sample_every=max(1, (total or 0) // FORCE_SAMPLE_STRUCTURES))
