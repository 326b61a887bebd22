"""Choosing structures from scored candidates (pure numpy; no I/O, no pyace).

Greedy batch D-optimal selection (``maxvol``)
---------------------------------------------
Per element the potential's active set is a square matrix A of B-projections; the ``.asi``
holds A⁻¹. For candidate atoms with projections B, ``C = B A⁻¹`` and γ = max |C| per atom.
Replacing active-set row j by atom b multiplies |det A| by |C[b, j]| (Cramer), so:

1. pick the candidate structure with the largest γ (the largest single volume gain);
2. absorb it: while one of its atoms has |C[b, j]| > 1, swap the best (b, j) into the active set
   and update C of *all* candidates and A⁻¹ with the rank-1 MaxVol update
   ``C ← C − C[:, j] (c_b − e_j)ᵀ / c_b[j]`` (exact, no refit); log|det A| grows by log|c_b[j]|;
3. repeat. A near-duplicate of a picked structure now has γ ≤ 1 and is not picked again.

When no candidate can grow the volume any more (all γ ≤ 1 against the updated active set),
the remaining picks continue greedily by γ against the updated active set — so exactly N
structures come back whenever N are available (``pace_select`` returns only the structures that
entered the active set, possibly fewer than asked).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


@dataclass
class Candidate:
    """A candidate structure: its pool index and its atoms' B-projections per element."""

    pool_index: int
    projections: dict[str, np.ndarray]  # element -> [n_atoms_of_element, n_functions]


@dataclass
class DOptimalResult:
    order: list[int]                    # positions in the candidate list, in pick order
    gamma_at_pick: list[float]          # γ of each pick against the active set at its pick time
    volume_gain: list[bool]             # whether the pick entered the active set
    swaps_per_element: dict[str, int]
    logdet_gain_per_element: dict[str, float]
    inverse: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # updated A⁻¹


def greedy_d_optimal(candidates: Sequence[Candidate], inverse: dict[str, np.ndarray], n: int,
                     tolerance: float = 1.0 + 1e-9, max_swaps_per_structure: int = 10_000) -> DOptimalResult:
    """Pick ``min(n, len(candidates))`` candidates by greedy batch D-optimality (module docstring)."""
    elements = sorted(inverse)
    inv = {el: np.array(inverse[el], dtype=float, copy=True) for el in elements}
    c_mat, owner = {}, {}
    for el in elements:
        blocks = [c.projections.get(el) for c in candidates]
        rows = [b for b in blocks if b is not None and len(b)]
        c_mat[el] = (np.vstack(rows) @ inv[el]) if rows else np.zeros((0, inv[el].shape[0]))
        owner[el] = np.concatenate([np.full(len(b), k) for k, b in enumerate(blocks) if b is not None and len(b)]
                                   ) if rows else np.zeros(0, dtype=int)
    alive = np.ones(len(candidates), dtype=bool)
    swaps = {el: 0 for el in elements}
    gain = {el: 0.0 for el in elements}
    result = DOptimalResult([], [], [], swaps, gain)

    def scores() -> np.ndarray:
        best = np.zeros(len(candidates))
        for el in elements:
            if len(owner[el]):
                np.maximum.at(best, owner[el], np.abs(c_mat[el]).max(axis=1))
        return best

    for _ in range(min(n, len(candidates))):
        s = np.where(alive, scores(), -np.inf)
        k = int(np.argmax(s))  # first of equal scores: pool order decides ties
        result.order.append(k)
        result.gamma_at_pick.append(float(s[k]))
        result.volume_gain.append(bool(s[k] > tolerance))
        alive[k] = False
        for el in elements:
            rows = np.nonzero(owner[el] == k)[0]
            for _ in range(max_swaps_per_structure):
                if not len(rows):
                    break
                block = np.abs(c_mat[el][rows])
                r, j = np.unravel_index(int(np.argmax(block)), block.shape)
                if block[r, j] <= tolerance:
                    break
                b = rows[r]
                c_b = c_mat[el][b].copy()
                u = c_b.copy()
                u[j] -= 1.0
                pivot = c_b[j]
                c_mat[el] -= np.outer(c_mat[el][:, j], u) / pivot
                inv[el] -= np.outer(inv[el][:, j], u) / pivot
                swaps[el] += 1
                gain[el] += float(np.log(abs(pivot)))
    result.inverse = inv
    return result


def top_by_gamma(gamma_max: np.ndarray, n: int) -> list[int]:
    """Positions of the ``n`` largest γ (stable: pool order breaks ties)."""
    return [int(i) for i in np.argsort(-np.asarray(gamma_max), kind="stable")[:n]]


def log_abs_det_of_inverse(inverse: np.ndarray) -> Optional[float]:
    """log|det A| from A⁻¹; None when the stored (pseudo-)inverse is singular — pyace's active set
    of data that do not determine every basis function is rank-deficient."""
    sign, logdet = np.linalg.slogdet(inverse)
    return float(-logdet) if sign != 0 else None


def active_set_logdet(active_set: np.ndarray, extra: Optional[np.ndarray], tolerance: float = 1.01,
                      max_iters: int = 300) -> float:
    """log|det| of the MaxVol active set of ``[active_set; extra]`` (for comparing selections):
    the D-optimality of a set of picks given the previous active set."""
    from pyace.maxvol import maxvol

    stacked = active_set if extra is None or not len(extra) else np.vstack([active_set, extra])
    rows, _ = maxvol(stacked, tol=tolerance, max_iters=max_iters)
    return float(np.linalg.slogdet(stacked[rows])[1])
