"""The extrapolation grade γ, defined on B-projections already in memory (numpy only).

Per element, an active set is a square matrix A of B-projections (the ``.asi`` holds A⁻¹).
An atom of that element with projection b has γ = max_j |(b A⁻¹)_j|: the largest factor by
which swapping it into the active set would grow |det A| (Cramer's rule). γ ≤ 1 means the atom
lies inside the active set's polytope (interpolation). pyace's evaluator grades the same number
in its own ``compute`` (``PyACECalculator``'s ``results["gamma"]``), and structure by structure
that is where the commands read it (``sample``'s workers:
:meth:`pace_worker.ace.projections.BProjector.graded_blocks`; ``validate`` with an active set);
this function grades projections computed for something else as well (the active set's own
atoms, a training set's batches). The two agree to the last bits of the sum's order
(``tests/test_gamma.py`` pins them together).
"""
from __future__ import annotations

import numpy as np


def extrapolation_grades(projections: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """γ of each row of ``projections`` ([atoms, n_funcs] of one element) against the active set
    whose inverse is ``inverse`` ([n_funcs, n_funcs] of the same element)."""
    return np.abs(projections @ inverse).max(axis=1)
