"""Weighted linear least squares over rows that arrive in blocks, in memory independent of the rows.

Guarantee: :meth:`StreamingLeastSquares.solve` returns the minimiser of

    Σ_g w_g ‖A_g[:, :k] c − y_g‖² + λ ‖c‖²

over the rows added so far, for any group weights ``w_g``, any leading block of ``k`` columns and
any ridge ``λ`` — without keeping the rows. Each group of rows (e.g. energies and forces, whose
relative weight is chosen later) keeps only the triangular factor ``R`` of the QR decomposition of
its rows augmented with the target, ``[A_g | y_g] = Q [[R_g, z_g], [0, ρ_g]]``: stacking two such
factors and re-factorising gives the factor of all their rows (TSQR), so memory is
``O(n_columns²)`` per group whatever the number of rows. The leading ``k × k`` block of ``R_g`` and
the first ``k`` entries of ``z_g`` are exactly the factor of the first ``k`` columns (a QR
factorisation is column-nested), so a nested family of models (the first ``k`` columns for several
``k``) is solved from one pass over the data. The normal equations are never formed, so the
conditioning is that of the weighted rows themselves, not its square.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def triangular_factor(rows: np.ndarray) -> np.ndarray:
    """The ``R`` factor of the QR decomposition of ``rows`` (square when there are enough rows)."""
    r = np.linalg.qr(np.asarray(rows, dtype=float), mode="r")
    if r.shape[0] < r.shape[1]:  # fewer rows than columns so far: pad to square with zero rows
        r = np.vstack([r, np.zeros((r.shape[1] - r.shape[0], r.shape[1]))])
    return r


class StreamingLeastSquares:
    """Accumulate row blocks per group; solve weighted, ridge-regularised, column-nested problems.

    Parameters
    ----------
    n_columns : number of unknowns (columns of every block)

    Examples
    --------
    >>> ls = StreamingLeastSquares(3)
    >>> ls.add("energy", np.eye(3), np.ones(3))
    >>> ls.solve({"energy": 1.0}).round(6).tolist()
    [1.0, 1.0, 1.0]
    """

    def __init__(self, n_columns: int):
        if n_columns < 1:
            raise ValueError(f"n_columns must be >= 1, got {n_columns}")
        self.n_columns = int(n_columns)
        self.factors_: dict[str, np.ndarray] = {}   # group -> R of [A | y], (n + 1) x (n + 1)
        self.n_rows_: dict[str, int] = {}

    def add(self, group: str, rows: np.ndarray, target: np.ndarray) -> None:
        """Add rows ``A`` (m × n_columns) with targets ``y`` (m) to ``group``."""
        rows = np.asarray(rows, dtype=float)
        target = np.asarray(target, dtype=float).reshape(-1)
        if rows.ndim != 2 or rows.shape[1] != self.n_columns or rows.shape[0] != target.shape[0]:
            raise ValueError(f"rows must be (m, {self.n_columns}) with m targets, got {rows.shape} and "
                             f"{target.shape}")
        if not len(rows):
            return
        self.add_factor(group, triangular_factor(np.hstack([rows, target[:, None]])), len(rows))

    def add_factor(self, group: str, factor: np.ndarray, n_rows: int) -> None:
        """Add the ``R`` factor of augmented rows ``[A | y]`` computed elsewhere (e.g. on a worker)."""
        factor = np.asarray(factor, dtype=float)
        if factor.shape != (self.n_columns + 1, self.n_columns + 1):
            raise ValueError(f"factor must be ({self.n_columns + 1}, {self.n_columns + 1}), got {factor.shape}")
        if group in self.factors_:
            factor = triangular_factor(np.vstack([self.factors_[group], factor]))
        self.factors_[group] = factor
        self.n_rows_[group] = self.n_rows_.get(group, 0) + int(n_rows)

    def solve(self, weights: dict[str, float], n_columns: Optional[int] = None, ridge: float = 0.0) -> np.ndarray:
        """Coefficients of the first ``n_columns`` columns (all by default) minimising the weighted
        squared residual plus ``ridge`` × the relative ridge scale (the mean squared column norm of
        the weighted rows) times ‖c‖²."""
        k = self.n_columns if n_columns is None else int(n_columns)
        if not 1 <= k <= self.n_columns:
            raise ValueError(f"n_columns must be in 1..{self.n_columns}, got {n_columns}")
        unknown = set(weights) - set(self.factors_)
        if unknown:
            raise ValueError(f"no rows were added to group(s) {sorted(unknown)}")
        blocks, rhs = [], []
        for group, weight in weights.items():
            if weight < 0:
                raise ValueError(f"weight of group '{group}' must be >= 0, got {weight}")
            r = self.factors_[group]
            blocks.append(np.sqrt(weight) * r[:k, :k])
            rhs.append(np.sqrt(weight) * r[:k, -1])
        stacked = np.vstack(blocks)
        if ridge > 0:
            scale = float(np.sum(stacked ** 2)) / k  # mean squared column norm: ridge is relative to the data
            stacked = np.vstack([stacked, np.sqrt(ridge * scale) * np.eye(k)])
            rhs.append(np.zeros(k))
        coef, *_ = np.linalg.lstsq(stacked, np.concatenate(rhs), rcond=None)
        return coef
