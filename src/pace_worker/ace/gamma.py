"""Per-atom B-projections and extrapolation grades γ of structures, chunk by chunk on workers.

:func:`load_scorer` (the worker initializer) reads the B-basis and the active set once per
process; :func:`score_structures` returns per-atom γ of each structure (in atom order) and,
above a threshold, its projections; :func:`projections_chunk` returns projections only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ase import Atoms

_SCORER: Optional[tuple] = None  # (key, BProjector, {element: A⁻¹})


def load_scorer(potential_yaml: str, asi: str) -> None:
    global _SCORER
    key = (str(potential_yaml), str(asi))
    if _SCORER is not None and _SCORER[0] == key:
        return
    from pace_worker.ace.activeset import load_active_set, load_bbasis
    from pace_worker.ace.projections import BProjector

    bbasis = load_bbasis(Path(potential_yaml))
    active = load_active_set(Path(asi), Path(potential_yaml), bbasis)
    _SCORER = (key, BProjector(bbasis), active.inverse)


def potential_elements() -> set[str]:
    return set(_SCORER[1].bbasis.elements_name)


def _projections(structures: Sequence[Atoms]):
    """Per structure: {element: [atoms of that element in order, n_funcs]} and their atom indices."""
    _, projector, _ = _SCORER
    proj, owner = projector(structures)
    names = projector.bbasis.elements_name
    per_structure = [dict() for _ in structures]
    for st, block in proj.items():
        if not len(block):
            continue
        bounds = np.searchsorted(owner[st], np.arange(len(structures) + 1))
        for s in range(len(structures)):
            if bounds[s + 1] > bounds[s]:
                per_structure[s][names[st]] = block[bounds[s]:bounds[s + 1]]
    return per_structure


def projections_chunk(structures: Sequence[Atoms]) -> list[dict[str, np.ndarray]]:
    return _projections(structures)


def score_structures(structures: Sequence[Atoms], keep_projections_above: Optional[float] = None):
    """``(per-atom γ, projections or None)`` per structure; the projections (computed anyway for
    γ) are kept for structures whose max γ is at least ``keep_projections_above`` (None: all)."""
    _, _, inverse = _SCORER
    result = []
    for atoms, blocks in zip(structures, _projections(structures)):
        gamma = np.zeros(len(atoms))
        symbols = np.array(atoms.get_chemical_symbols())
        for el, block in blocks.items():
            gamma[symbols == el] = np.abs(block @ inverse[el]).max(axis=1)
        keep = keep_projections_above is None or gamma.max() >= keep_projections_above
        result.append((gamma, blocks if keep else None))
    return result
