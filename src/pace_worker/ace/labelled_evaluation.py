"""A potential evaluated on labelled structures, chunk by chunk on the workers.

:func:`evaluate_chunk` takes a chunk of a test set's file (a
:class:`~pace_worker.files.frames.PoolChunk`: parsed on the worker, each structure's labels
checked by :func:`~pace_worker.files.structures.checked_labels` and its elements against the
potential's) or of structures already read and checked (:class:`LabelledChunk`: ``train``'s
data, a pickled test set) and gives one :class:`EvaluatedStructure` per structure: its labels,
the prediction (:func:`pace_worker.ace.predictions.predict_chunk`), its shortest interatomic
distance and its pairs inside the core repulsion. Only these small arrays go back to the main
process, never the structures, so a test set is read, checked and evaluated in parallel.
:func:`evaluated_structures` runs a whole test set through a
:class:`~pace_worker.parallel.executor.ChunkExecutor`, in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from pace_worker.ace.predictions import Prediction, load_potential, predict_chunk
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
from pace_worker.parallel.executor import ChunkExecutor
from pace_worker.stack import BackgroundImports


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


@dataclass
class EvaluatedStructure:
    """One labelled structure as the main process needs it for the errors."""

    numbers: np.ndarray
    group: str
    energy: float                      # the label, as given
    forces: Optional[np.ndarray]       # None: an energy-only structure
    stress: Optional[np.ndarray]
    prediction: Prediction
    shortest_distance: Optional[float]  # within the largest r_in + 3 Å; None: no neighbour that close
    pairs_inside_r_in: int


@dataclass
class LabelledChunk:
    """Structures already read and checked, with their labels ``(energy, forces, stress)``."""

    first_index: int
    atoms: list
    labels: list
    settings: EvaluationSettings

    def __len__(self) -> int:
        return len(self.atoms)


def evaluate_chunk(chunk: Union[PoolChunk, LabelledChunk]) -> list[EvaluatedStructure]:
    """Worker: an :class:`EvaluatedStructure` per structure of the chunk, in order (the potential
    is the one :func:`pace_worker.ace.predictions.load_potential` loaded in this process)."""
    if isinstance(chunk, PoolChunk):
        settings = chunk.options["settings"]
        structures, labels, predictions = _checked_and_predicted(chunk, chunk.options["test_set"])
    else:
        settings, structures, labels = chunk.settings, chunk.atoms, chunk.labels
        predictions = predict_chunk(structures)
    rows = []
    for atoms, (energy, forces, stress), prediction in zip(structures, labels, predictions):
        shortest, pairs = shortest_distance_and_core(atoms, settings.inner_cutoffs,
                                                     (prediction.shortest_distance, prediction.reach))
        rows.append(EvaluatedStructure(np.array(atoms.numbers), str(atoms.info.get(settings.group_by, "all")), energy,
                                       forces, stress, prediction, shortest, pairs))
    return rows


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
                         meanwhile: Sequence[str] = ()) -> list[EvaluatedStructure]:
    """Every structure of ``structures`` evaluated by ``potential`` (with γ given ``asi``), in order.
    ``meanwhile``: modules the caller needs next, imported while the workers evaluate."""
    initargs = (str(potential), str(asi) if asi else None)
    load_potential(*initargs)  # forked workers inherit it
    chunks, total = _chunks(structures, settings, executor.chunk_size)
    rows: list[EvaluatedStructure] = []
    results = executor.map_chunks(evaluate_chunk, chunks, initializer=load_potential, initargs=initargs,
                                  description="evaluating", total=total)
    for _, chunk_rows in BackgroundImports(*meanwhile).during(results, executor.runs_elsewhere(total)):
        rows.extend(chunk_rows)
    if not rows:
        where = structures.path
        raise InputError(f"{getattr(structures, 'what', 'dataset')} '{where}' contains no structures")
    return rows


def _chunks(structures: Union[LabelledStructures, TestSetFile], settings: EvaluationSettings,
            chunk_size: int) -> tuple[Iterator, Optional[int]]:
    if isinstance(structures, LabelledStructures):
        labels = list(zip(structures.energies, structures.forces, structures.stresses or [None] * len(structures)))
        return (LabelledChunk(i, structures.atoms[i:i + chunk_size], labels[i:i + chunk_size], settings)
                for i in range(0, len(structures), chunk_size)), len(structures)
    offsets = None if is_compressed(structures.path) else frame_offsets(structures.path, structures.what)
    chunks = pool_chunks(structures.path, chunk_size, structures.what,
                         lambda: {"settings": settings, "test_set": structures}, offsets)
    return chunks, None if offsets is None else len(offsets)
