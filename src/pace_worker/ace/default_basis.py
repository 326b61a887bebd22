"""The default ACE basis when config.yaml gives none, and the rule for its size.

pacemaker's template: ``FinnisSinclairShiftedScaled`` embedding with 2 densities, ``SBessel``
radial basis, ``nradmax_by_orders [15, 6, 4, 3, 2, 2]``, ``lmax_by_orders [0, 3, 3, 2, 2, 1]``
for unary and the template's smaller ranks for binary and higher; the number of functions per
element from the training data (:func:`functions_per_element_for`). The cutoff comes from config
(default 6 Å).
"""
from __future__ import annotations

MIN_FUNCTIONS_PER_ELEMENT = 16
MAX_FUNCTIONS_PER_ELEMENT = 700
ATOMS_PER_FUNCTION = 10

TEMPLATE_FUNCTIONS = {
    "UNARY": {"nradmax_by_orders": [15, 6, 4, 3, 2, 2], "lmax_by_orders": [0, 3, 3, 2, 2, 1]},
    "BINARY": {"nradmax_by_orders": [15, 6, 3, 2, 2, 1], "lmax_by_orders": [0, 3, 2, 1, 1, 0]},
    "TERNARY": {"nradmax_by_orders": [15, 3, 3, 2, 1], "lmax_by_orders": [0, 2, 2, 1, 1]},
    "ALL": {"nradmax_by_orders": [15, 3, 2, 1, 1], "lmax_by_orders": [0, 2, 2, 1, 1]},
}


def functions_per_element_for(atoms_per_element: dict[str, int]) -> int:
    """The basis-size rule: ``clip(N_min // 10, 16, 700)``, and never more than ``N_min``.

    ``N_min`` is the number of training atoms of the rarest element. Ten atoms (thirty force
    components) per basis function keeps the fit well determined; 700 is pacemaker's template
    default; the last cap keeps the active set (which needs at least as many atoms of an
    element as it has functions) computable.
    """
    n_min = min(atoms_per_element.values())
    n = min(MAX_FUNCTIONS_PER_ELEMENT, max(MIN_FUNCTIONS_PER_ELEMENT, n_min // ATOMS_PER_FUNCTION))
    return max(1, min(n, n_min))


def default_potential(elements: list[str], cutoff: float, n_functions: int) -> dict:
    """pacemaker's ``potential`` section of the default basis for ``elements``."""
    functions: dict = {"number_of_functions_per_element": int(n_functions)}
    functions.update({k: dict(v) for k, v in TEMPLATE_FUNCTIONS.items()})
    return {
        "deltaSplineBins": 0.001,
        "elements": list(elements),
        "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": [1, 1, 1, 0.5],
                               "ndensity": 2}},
        "bonds": {"ALL": {"radbase": "SBessel", "radparameters": [5.25], "rcut": float(cutoff), "dcut": 0.01,
                          "NameOfCutoffFunction": "cos"}},
        "functions": functions,
    }
