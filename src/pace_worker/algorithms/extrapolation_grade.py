"""The extrapolation grade γ: the one definition every command uses (numpy only).

Per element, an active set is a square matrix A of B-projections (the ``.asi`` holds A⁻¹).
An atom of that element with projection b has γ = max_j |(b A⁻¹)_j|: the largest factor by
which swapping it into the active set would grow |det A| (Cramer's rule). γ ≤ 1 means the atom
lies inside the active set's polytope (interpolation); pyace's ``PyACECalculator`` reports the
same number as ``results["gamma"]`` (``tests/test_gamma.py`` pins the two together).
"""
from __future__ import annotations

import numpy as np


def extrapolation_grades(projections: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """γ of each row of ``projections`` ([atoms, n_funcs] of one element) against the active set
    whose inverse is ``inverse`` ([n_funcs, n_funcs] of the same element)."""
    return np.abs(projections @ inverse).max(axis=1)
