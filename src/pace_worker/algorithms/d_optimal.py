"""Choosing structures from scored candidates (numpy; no I/O; pyace's MaxVol routine comes as a parameter).

Batch D-optimal selection (``maxvol``)
--------------------------------------
First, MaxVol over the active set stacked with all candidate atoms (what ``pace_select``
does) names the candidates that own rows of the best active set; they are picked first, most
rows first (:func:`joint_maxvol_order`). The rest of the N picks are greedy:

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

from dataclasses import dataclass
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


def add_outer(matrix: np.ndarray, alpha: float, x: np.ndarray, y: np.ndarray) -> None:
    """``matrix += alpha · x yᵀ`` in place. For a float64 matrix in C or Fortran order this is
    BLAS ``dger``: no temporary of the matrix's size (``np.outer`` makes one per update).
    ``x`` and ``y`` must not be views of ``matrix``."""

    x, y = np.ascontiguousarray(x, dtype=float), np.ascontiguousarray(y, dtype=float)
    if matrix.dtype != np.float64 or not matrix.size or not (matrix.flags.c_contiguous or matrix.flags.f_contiguous):
        matrix += alpha * np.outer(x, y)
        return
    # dger works on Fortran order; a C-ordered matrix is the Fortran-ordered transpose
    target, first, second = (matrix, x, y) if matrix.flags.f_contiguous else (matrix.T, y, x)
    from scipy.linalg.blas import dger

    updated = dger(alpha, first, second, a=target, overwrite_a=True)
    if not np.shares_memory(updated, matrix):  # dger made a copy after all
        target[...] = updated


def swap_into_active_set(c_t: np.ndarray, inverse: np.ndarray, b: int, j: int) -> float:
    """Replace active-set row j by candidate atom b, in place: the rank-1 MaxVol update of
    ``C = B A⁻¹`` (all candidate atoms; given as ``c_t`` = Cᵀ, functions × atoms — pass ``c.T``
    for C itself) and of ``A⁻¹``. Returns log|det| gained, log|C[b, j]|."""
    pivot = c_t[j, b]
    u = c_t[:, b].copy()
    u[j] -= 1.0
    add_outer(c_t, -1.0 / pivot, u, c_t[j].copy())
    add_outer(inverse, -1.0 / pivot, inverse[:, j].copy(), u)
    return float(np.log(abs(pivot)))


def column_abs_max(matrix: np.ndarray) -> np.ndarray:
    """``np.abs(matrix).max(axis=0)`` row by row (contiguous rows, no temporary of
    the matrix's size)."""
    best = np.abs(matrix[0])
    row = np.empty_like(best)
    for k in range(1, len(matrix)):
        np.maximum(best, np.abs(matrix[k], out=row), out=best)
    return best


def joint_maxvol_order(candidates: Sequence[Candidate], inverse: dict[str, np.ndarray], maxvol,
                       tolerance: float = 1.01, max_iters: int = 300) -> list[int]:
    """Candidates that own rows of the MaxVol active set of ``[A; all candidate atoms]`` (what
    ``pace_select`` computes), most rows first, ties in candidate order. Empty if MaxVol fails
    (an active set of degenerate data is singular). ``maxvol``: the MaxVol routine
    ``maxvol(matrix, tol=, max_iters=) -> (rows, _)``, pyace's ``pyace.maxvol.maxvol``."""
    counts = np.zeros(len(candidates), dtype=int)
    in_pool_order = sorted(range(len(candidates)), key=lambda k: candidates[k].pool_index)
    for el, inv in inverse.items():
        blocks = [(k, candidates[k].projections[el]) for k in in_pool_order
                  if len(candidates[k].projections.get(el, ()))]
        if not blocks:
            continue
        active = np.linalg.pinv(inv)
        # candidates first, the active set last: the layout of pyace's compute_active_set
        stacked = np.vstack([b for _, b in blocks] + [active])
        owner = np.concatenate([np.full(len(b), k) for k, b in blocks] + [np.full(len(active), -1)])
        try:
            rows, _ = maxvol(stacked, tol=tolerance, max_iters=max_iters)
        except (ValueError, np.linalg.LinAlgError):
            return []
        np.add.at(counts, owner[rows][owner[rows] >= 0], 1)
    chosen = np.nonzero(counts)[0]
    return [int(k) for k in chosen[np.argsort(-counts[chosen], kind="stable")]]


def greedy_d_optimal(candidates: Sequence[Candidate], inverse: dict[str, np.ndarray], n: int,
                     tolerance: float = 1.0 + 1e-9, max_swaps_per_structure: int = 10_000,
                     first: Sequence[int] = ()) -> DOptimalResult:
    """Pick ``min(n, len(candidates))`` candidates by greedy batch D-optimality (module docstring).

    ``first``: candidate positions to pick before the greedy ones, in that order (e.g.
    :func:`joint_maxvol_order`); they are absorbed into the active set like greedy picks.
    """
    elements = sorted(inverse)
    inv = {el: np.array(inverse[el], dtype=float, copy=True) for el in elements}
    # per element: Cᵀ = (B A⁻¹)ᵀ, functions × candidate atoms (a candidate's atoms are adjacent
    # columns, candidates in order), which candidates own the blocks and where each block starts
    c_t, owners, starts = {}, {}, {}
    for el in elements:
        blocks = [(k, c.projections[el]) for k, c in enumerate(candidates) if len(c.projections.get(el, ()))]
        if blocks:
            c_t[el] = np.ascontiguousarray((np.vstack([b for _, b in blocks]) @ inv[el]).T)
            owners[el] = np.array([k for k, _ in blocks])
            starts[el] = np.concatenate([[0], np.cumsum([len(b) for _, b in blocks])])
    columns = {el: {int(k): slice(starts[el][i], starts[el][i + 1]) for i, k in enumerate(owners[el])}
               for el in c_t}
    alive = np.ones(len(candidates), dtype=bool)
    swaps = {el: 0 for el in elements}
    result = DOptimalResult([], [], [], swaps)

    def scores() -> np.ndarray:
        best = np.zeros(len(candidates))
        for el in c_t:
            per_block = np.maximum.reduceat(column_abs_max(c_t[el]), starts[el][:-1])
            best[owners[el]] = np.maximum(best[owners[el]], per_block)
        return best

    def score_of(k: int) -> float:
        return max([float(np.abs(c_t[el][:, columns[el][k]]).max()) for el in c_t if k in columns[el]] + [0.0])

    queue = list(first)
    current = None  # scores() of C as it is; None once a swap has changed C
    for _ in range(min(n, len(candidates))):
        if queue:  # given picks: only their own γ is needed
            k = queue.pop(0)
            gamma = score_of(k)
        else:
            current = scores() if current is None else current
            s = np.where(alive, current, -np.inf)
            k = int(np.argmax(s))  # first of equal scores: candidate order decides
            gamma = float(s[k])
        result.order.append(k)
        result.gamma_at_pick.append(gamma)
        result.volume_gain.append(bool(gamma > tolerance))
        alive[k] = False
        for el in c_t:
            if k in columns[el]:
                made = absorb(c_t[el], inv[el], columns[el][k], tolerance, max_swaps_per_structure)
                swaps[el] += made
                current = None if made else current
    return result


def absorb(c_t: np.ndarray, inverse: np.ndarray, cols: slice, tolerance: float, max_swaps: int) -> int:
    """Swap the atoms of one picked structure (columns ``cols`` of Cᵀ) into the active set while
    one has |C[b, j]| > ``tolerance``, the largest first (ties: the first atom); returns the swaps."""
    for made in range(max_swaps):
        block = np.abs(c_t[:, cols]).T  # atoms × functions
        r, j = np.unravel_index(int(np.argmax(block)), block.shape)
        if block[r, j] <= tolerance:
            return made
        swap_into_active_set(c_t, inverse, cols.start + r, j)
    return max_swaps


def top_by_gamma(gamma_max: np.ndarray, n: int) -> list[int]:
    """Positions of the ``n`` largest γ (stable: pool order breaks ties)."""
    return [int(i) for i in np.argsort(-np.asarray(gamma_max), kind="stable")[:n]]


def log_abs_det_of_inverse(inverse: np.ndarray) -> Optional[float]:
    """log|det A| from A⁻¹; None when the stored (pseudo-)inverse is singular — pyace's active set
    of data that do not determine every basis function is rank-deficient."""
    sign, logdet = np.linalg.slogdet(inverse)
    return float(-logdet) if sign != 0 else None


def swap_maxvol_gain(inverse: np.ndarray, projections: Optional[np.ndarray], tolerance: float = 1.01,
                     max_swaps: int = 100_000) -> float:
    """log|det| gained by growing the active set (given by its inverse) with MaxVol swaps of the
    given atoms until none has γ > ``tolerance``. Every swap multiplies |det| by its γ > 1, so the
    result only depends on which atoms are offered and starts from the same active set for every
    method: a fair D-optimality score of a set of picks."""
    if projections is None or not len(projections):
        return 0.0
    inv = np.array(inverse, dtype=float, copy=True)
    c = projections @ inv
    gain = 0.0
    for _ in range(max_swaps):
        b, j = np.unravel_index(int(np.argmax(np.abs(c))), c.shape)
        if abs(c[b, j]) <= tolerance:
            break
        gain += swap_into_active_set(c.T, inv, b, j)
    return gain


def picks_logdet_gain(picks: Sequence[Candidate], inverse: dict[str, np.ndarray]) -> dict[str, float]:
    """Per element, :func:`swap_maxvol_gain` of all the picks' atoms: the D-optimality of a set of
    picks, independent of the order they were picked in."""
    gains = {}
    for el, inv in inverse.items():
        blocks = [p.projections[el] for p in picks if len(p.projections.get(el, ()))]
        gains[el] = swap_maxvol_gain(inv, np.vstack(blocks) if blocks else None)
    return gains
