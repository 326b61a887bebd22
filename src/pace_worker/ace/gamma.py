"""Extrapolation grades γ and B-projections of pool structures, chunk by chunk on workers.

:func:`load_scorer` (the worker initializer) reads the B-basis and the active set once per
process; :func:`score_chunk` turns a chunk of the pool into one :class:`ScoredStructure` per
structure; :func:`projections_chunk` gives the projections of given structures only.
γ of an atom is pyace's own, graded in the same ``compute`` as its projections
(:meth:`pace_worker.ace.projections.BProjector.graded_blocks`): bit for bit ``PyACECalculator``'s,
max |b A⁻¹| of :func:`pace_worker.algorithms.extrapolation_grade.extrapolation_grades`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ase import Atoms

from pace_worker.ace.activeset import load_active_set, load_bbasis
from pace_worker.ace.projections import BProjector
from pace_worker.files.frames import PoolChunk, read_checked
from pace_worker.fingerprint import structure_key
from pace_worker.parallel import worker_state

STATE = "γ scorer"  # the BProjector of this process, with the active set loaded


def load_scorer(potential_yaml: str, asi: str) -> None:
    """Worker initializer: the B-basis and its checked active set, once per process."""
    def build():
        bbasis = load_bbasis(Path(potential_yaml))
        return BProjector(bbasis, load_active_set(Path(asi), Path(potential_yaml), bbasis).inverse)

    worker_state.load(STATE, (str(potential_yaml), str(asi)), build)


def _projections(structures: Sequence[Atoms]):
    """Per structure: {element: [atoms of that element in order, n_funcs]}."""
    projector = worker_state.loaded(STATE)
    names = projector.bbasis.elements_name
    return [{names[st]: block for st, block in projector.blocks(projector.environment(atoms)).items()}
            for atoms in structures]


def projections_chunk(structures: Sequence[Atoms]) -> list[dict[str, np.ndarray]]:
    return _projections(structures)


def _graded(atoms: Atoms, env, keep_projections_above: Optional[float]):
    """``(per-atom γ, projections or None)`` of one structure from its pyace environment: the
    projections (``{element: [its atoms, n_funcs]}``) when its max γ is at least
    ``keep_projections_above`` (None: always)."""
    projector = worker_state.loaded(STATE)
    names = projector.bbasis.elements_name
    gamma, blocks = projector.graded_blocks(env, keep_projections_above, projector.species(atoms))
    return gamma, None if blocks is None else {names[st]: block for st, block in blocks.items()}


def score_structures(structures: Sequence[Atoms], keep_projections_above: Optional[float] = None):
    """``(per-atom γ, projections or None)`` per structure; the projections (computed anyway for
    γ) are kept for structures whose max γ is at least ``keep_projections_above`` (None: all)."""
    projector = worker_state.loaded(STATE)
    return [_graded(atoms, projector.environment(atoms), keep_projections_above) for atoms in structures]


@dataclass
class ScoredStructure:
    """What a worker sends back for one pool structure (see :func:`score_chunk`)."""

    pool_index: int
    fingerprint: Optional[bytes] = None    # structure_key; None for a structure that could not be used
    gamma_max: Optional[float] = None      # None: not scored (unknown elements or a problem)
    frame: Optional[bytes] = None          # its extxyz text, sent back only if it may still enter the buffer
    gamma: Optional[np.ndarray] = None     # per atom
    projections: Optional[dict] = None
    problem: Optional[str] = None          # "<reason>: <detail>" of a structure that was skipped


def score_chunk(chunk: PoolChunk) -> list[ScoredStructure]:
    """Worker: a :class:`ScoredStructure` per structure of the chunk. Unusable structures (a frame
    ASE cannot parse, a geometry pyace must not see) carry their problem; ``gamma_max`` is None
    for them and for structures with elements the potential lacks. A structure goes back as its
    frame's text (a few bytes to pickle; an ASE ``Atoms`` cost ~30 µs to pickle and unpickle, and
    40 % of a 20k pool goes back), parsed again only if picked. Chunk options:
    ``send_back_from`` — structures whose max γ is below it cannot enter the buffer any more, so
    their frames, per-atom γ and projections are not sent back (None: all are);
    ``with_projections`` — send projections back at all; ``min_distance`` — closer atoms make a
    structure unusable."""
    send_back_from = chunk.options.get("send_back_from")
    keep_above = send_back_from if chunk.options.get("with_projections", False) else np.inf
    projector = worker_state.loaded(STATE)
    checked, environments = projector.checked_environments(read_checked(chunk), chunk.options.get("min_distance", 0.0))
    frames = chunk.texts()  # read for the parse already
    rows = []
    for k, ((atoms, problem), env) in enumerate(zip(checked, environments)):
        index = chunk.first_index + k
        if atoms is None:
            rows.append(ScoredStructure(index, problem=problem))
            continue
        fp = structure_key(atoms)
        if env is None:  # elements the potential lacks
            rows.append(ScoredStructure(index, fp))
            continue
        gamma, projections = _graded(atoms, env, keep_above)
        g = float(gamma.max())
        if send_back_from is not None and g < send_back_from:
            rows.append(ScoredStructure(index, fp, g))
        else:
            rows.append(ScoredStructure(index, fp, g, frames[k], gamma, projections))
    return rows
