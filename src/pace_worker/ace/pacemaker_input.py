"""Building pacemaker's ``input.yaml`` from config.yaml, the data and the documented defaults.

Defaults for what config.yaml leaves out
----------------------------------------
* ``potential.elements``: the elements found in the dataset.
* ``cutoff`` (the bonds' ``rcut`` of the default basis): 6.0 Å.
* basis: the default basis and its size rule (:mod:`pace_worker.ace.default_basis`).
* ``data.test_size``: 0.1 (see :mod:`pace_worker.algorithms.train_test_split`), ``data.reference_energy``: ``auto``.
* ``fit``: BFGS, ``maxiter`` 1000, ``loss {kappa: 0.3, L1_coeffs: 1e-8, L2_coeffs: 1e-8}``,
  ``repulsion: auto``; ``backend``: ``tensorpot``, ``batch_size`` 100, ``display_step`` 50.
"""
from __future__ import annotations

from typing import Optional

from pace_worker.ace.default_basis import default_potential, functions_per_element_for
from pace_worker.ace.pacemaker_child import STEP_CALLBACK
from pace_worker.config import PacemakerSettings


def potential_section(settings: PacemakerSettings, data_elements: list[str],
                      atoms_per_element: dict[str, int]) -> dict:
    """The target basis as a pacemaker ``potential`` dict: config's section with defaults filled in."""
    elements = sorted(set(data_elements))
    default = default_potential(elements, settings.cutoff, functions_per_element_for(atoms_per_element))
    given = settings.potential
    if given is None:
        return default
    section = {k: v for k, v in given.model_dump().items() if v is not None}
    section.setdefault("elements", elements)
    for key in ("embeddings", "bonds", "functions"):
        section.setdefault(key, default[key])
    return section


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def build_input(settings: PacemakerSettings, *, potential, train_file: str, test_file: Optional[str],
                seed: int, reference_energy) -> dict:
    """The complete pacemaker input (as a dict to dump to ``input.yaml``).

    ``potential`` is a dict (a basis to build, maybe with ``initial_potential``) or the path
    of a B-basis YAML (pacemaker's ``-p``). ``reference_energy`` ``None`` leaves it out
    (then the data must already be on the corrected scale). Its ``metadata`` is a copy of
    config's: a caller may add its own keys.
    """
    data = {"filename": train_file}
    if test_file:
        data["test_filename"] = test_file
    if reference_energy is not None:
        data["reference_energy"] = reference_energy
    if settings.data.aug_factor is not None:
        data["aug_factor"] = settings.data.aug_factor
    if settings.data.ignore_weights is not None:
        data["ignore_weights"] = settings.data.ignore_weights
    fit = _drop_none(settings.fit.model_dump(exclude={"max_time"}))  # max_time is pace-worker's
    fit["loss"] = _drop_none(fit["loss"])
    # after every optimizer step: a whole copy of the interim potential, and the budget (max_time)
    fit["callbacks"] = [*(fit.get("callbacks") or []), STEP_CALLBACK]
    backend = _drop_none(settings.backend.model_dump())
    return {
        "seed": int(seed),
        "metadata": dict(settings.metadata or {}),
        "data": data,
        "potential": potential,
        "fit": fit,
        "backend": backend,
    }

