"""Active sets (``.asi``) and extrapolation grades γ, computed with pyace.

The active set of a potential over a set of structures is chosen with MaxVol on the linear
B-projections of all their atoms (``pace_activeset --all-atoms``): every atom used for the
active set then has γ ≤ ``gamma_tolerance`` by construction. pacemaker's ``pace_activeset``
leaves atoms with large force errors out by default, which lets some training atoms exceed
γ = 1; here every training atom counts, so a training structure never looks extrapolative.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from ase import Atoms

from pace_worker.ace import potentials
from pace_worker.ace.projections import BProjector, function_counts
from pace_worker.algorithms.extrapolation_grade import extrapolation_grades
from pace_worker.errors import InputError, missing_reason
from pace_worker.files.discovery import Found
from pace_worker.files.structures import atoms_per_element, file_sha256
from pace_worker.stack import import_pyace, import_pyace_core, import_pyace_module

log = logging.getLogger(__name__)

PROJECTIONS_MEMORY_LIMIT = 2 * 1024 ** 3  # bytes of B-projections held at once before batching
# the potential .yaml's metadata key that names its own active set (an .asi cannot carry it: pyace and
# LAMMPS read every array in it as an element's matrix)
ACTIVE_SET_KEY = "pace_worker_active_set_sha256"


def record_active_set(potential_yaml: Path, asi_path: Optional[Path]) -> None:
    """Write the .asi's sha256 into the potential's metadata (or remove a stale one when None)."""
    import_pyace()
    from pyace import BBasisConfiguration

    bconf = BBasisConfiguration(str(potential_yaml))
    meta = bconf.metadata
    if asi_path is not None:
        meta[ACTIVE_SET_KEY] = file_sha256(asi_path)
    elif ACTIVE_SET_KEY in meta:
        del meta[ACTIVE_SET_KEY]
    bconf.save(str(potential_yaml))


class ActiveSetUnavailable(Exception):
    """The data cannot determine an active set (fewer atoms of an element than functions)."""


@dataclass
class ActiveSet:
    """Pseudo-inverses of the active-set matrices, per element (``{symbol: [n_funcs, n_funcs]}``)."""

    inverse: dict[str, np.ndarray]
    regularized: bool = False  # MaxVol needed a tiny jitter of exactly degenerate projections
    # max γ over the atoms the active set was computed from (None when built by batches)
    gamma_max_of_source: Optional[float] = None

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **self.inverse)


def load_bbasis(potential_yaml: Path):
    import_pyace_core()
    from pyace.basis import ACEBBasisSet, BBasisConfiguration

    return ACEBBasisSet(BBasisConfiguration(str(potential_yaml)))


def maxvol_routine():
    """pyace's MaxVol (``pyace.maxvol.maxvol``), for the algorithms that take it as a parameter;
    imported at its first call (it imports SciPy's ``linalg``, ~0.2 s, which a command should not
    wait for before its workers start)."""
    def maxvol(*args, **kwargs):
        return import_pyace_module("maxvol").maxvol(*args, **kwargs)

    return maxvol


def basis_function_counts(bbasis) -> dict[str, int]:
    """The number of B-basis functions of each element of a loaded basis (the active set of an
    element is that many atoms)."""
    return dict(zip(bbasis.elements_name, function_counts(bbasis)))


def compute_active_set(potential_yaml: Path, structures: list[Atoms], gamma_tolerance: float = 1.01,
                       maxvol_iters: int = 300, memory_limit: int = PROJECTIONS_MEMORY_LIMIT) -> ActiveSet:
    """MaxVol active set of the potential over all atoms of ``structures``."""
    bbasis = load_bbasis(potential_yaml)
    import_pyace()
    from pyace.activelearning import compute_A_active_inverse, compute_active_set_by_batches
    from pyace.activelearning import compute_active_set as maxvol_active_set

    nfuncs = basis_function_counts(bbasis)
    counts = {el: 0 for el in bbasis.elements_name} | atoms_per_element(structures)
    short = {el: (counts.get(el, 0), n) for el, n in nfuncs.items() if counts.get(el, 0) < n}
    if short:
        detail = ", ".join(f"{el}: {c} atoms < {n} functions" for el, (c, n) in short.items())
        raise ActiveSetUnavailable(f"too few atoms to determine the active set ({detail})")

    projector = BProjector(bbasis)
    envs = [projector.environment(a) for a in structures]
    required = sum(counts[el] * nfuncs[el] * 8 for el in nfuncs)
    names = bbasis.elements_name
    regularized = False
    if required <= memory_limit:
        projections, _ = projector(envs)
        try:
            active = maxvol_active_set({st: p.copy() for st, p in projections.items()}, tol=gamma_tolerance,
                                       max_iters=maxvol_iters)
        except (ValueError, np.linalg.LinAlgError) as exc:
            # few, similar structures can make B-projections exactly linearly dependent, and MaxVol's
            # LU start fails ("Input matrix must not be singular"); a jitter 1e-8 of the largest
            # projection (seeded) breaks the tie without changing which environments are chosen
            log.warning("MaxVol failed on degenerate projections (%s): retrying with a 1e-8 jitter", exc)
            rng = np.random.default_rng(0)
            jittered = {st: p + 1e-8 * np.abs(p).max() * rng.standard_normal(p.shape) for st, p in projections.items()}
            active = maxvol_active_set(jittered, tol=gamma_tolerance, max_iters=maxvol_iters)
            regularized = True
    else:
        n_batches = max(2, math.ceil(required / memory_limit))
        _, active, _ = compute_active_set_by_batches(bbasis, envs, structure_ind_list=list(range(len(envs))),
                                                     n_batches=n_batches, gamma_tolerance=gamma_tolerance,
                                                     maxvol_iters=maxvol_iters)
    inverse = compute_A_active_inverse(active)
    gamma_max = None
    if required <= memory_limit:  # the projections are at hand: γ of the source atoms costs one product
        gamma_max = max(float(extrapolation_grades(p, inverse[st]).max()) for st, p in projections.items() if len(p))
    return ActiveSet({names[st]: inv for st, inv in inverse.items()}, regularized=regularized,
                     gamma_max_of_source=gamma_max)


def read_inverse_matrices(asi_path: Path) -> dict[str, np.ndarray]:
    """The ``{element: A⁻¹}`` matrices of an ``.asi`` (NumPy's ``.npz``, read without unpickling
    anything), unchecked: :func:`load_active_set` checks them against the potential."""
    try:
        data = np.load(asi_path)
        return {k: np.asarray(data[k]) for k in data.keys()}
    except Exception as exc:
        raise InputError(f"active set '{asi_path}' is not a readable .asi file ({type(exc).__name__}); "
                         "recompute it with pace_activeset or pace-worker train")


def load_active_set(asi_path: Path, potential_yaml: Path, bbasis=None) -> ActiveSet:
    """Read an ``.asi`` and check it belongs to the potential (elements and matrix shapes)."""
    asi_path = Path(asi_path)
    if not asi_path.is_file():
        reason = missing_reason(asi_path) if not asi_path.exists() else "is not a file"
        raise InputError(f"active set '{asi_path}' {reason}; give the .asi written with the potential")
    inverse = read_inverse_matrices(asi_path)
    bbasis = bbasis or load_bbasis(potential_yaml)
    nfuncs = basis_function_counts(bbasis)
    if set(inverse) != set(nfuncs):
        raise InputError(f"active set '{asi_path}' has elements {sorted(inverse)} but potential '{potential_yaml}' "
                         f"has {sorted(nfuncs)}; it belongs to another potential")
    for el, n in nfuncs.items():
        if inverse[el].shape != (n, n):
            raise InputError(f"active set '{asi_path}': element {el} has shape {inverse[el].shape}, potential "
                             f"'{potential_yaml}' needs ({n}, {n}); it belongs to another potential")
    from pyace.basis import BBasisConfiguration  # loaded by load_bbasis

    recorded = dict(BBasisConfiguration(str(potential_yaml)).metadata).get(ACTIVE_SET_KEY)
    if recorded is not None and recorded != file_sha256(asi_path):
        raise InputError(f"active set '{asi_path}' is not the one built for potential '{potential_yaml}' (train "
                         f"recorded its active set's sha256 {recorded[:12]}… in the potential); give the .asi "
                         f"written with it (if you recomputed it on purpose, remove '{ACTIVE_SET_KEY}' from the "
                         "potential's metadata)")
    return ActiveSet(inverse)


def structure_gammas(potential_yaml: Path, active_set: ActiveSet, structures: list[Atoms],
                     bbasis=None) -> np.ndarray:
    """Max extrapolation grade γ of each structure (:func:`extrapolation_grades` of its atoms)."""
    bbasis = bbasis or load_bbasis(potential_yaml)
    if not structures:
        return np.zeros(0)
    projections, owner = BProjector(bbasis)(structures)
    gamma = np.zeros(len(structures))
    for st, proj in projections.items():
        if len(proj) == 0:
            continue
        g = extrapolation_grades(proj, active_set.inverse[bbasis.elements_name[st]])
        np.maximum.at(gamma, owner[st], g)
    return gamma


def optional_gammas(potential_yaml: Optional[Path], asi_path: Optional[Path], structures: list[Atoms]):
    """γ per structure, or None when no potential/active set is given."""
    if potential_yaml is None or asi_path is None:
        return None
    bbasis = load_bbasis(potential_yaml)
    return structure_gammas(potential_yaml, load_active_set(asi_path, potential_yaml, bbasis), structures, bbasis)


# ----------------------------------------------------------------------------- a command's active set
@dataclass(frozen=True)
class GammaPotential:
    """A B-basis .yaml and its active set, checked against each other (what γ needs)."""

    yaml: Path
    asi: Path
    active_set: ActiveSet


def load_gamma_potential(potential: Found, asi: Found) -> GammaPotential:
    """The B-basis .yaml of ``potential`` and the active set ``asi``, checked to belong to it."""
    yaml_path = potentials.resolve_b_basis(potential.path, potential.source)
    if not asi.path.is_file():
        reason = missing_reason(asi.path) if not asi.path.exists() else "is not a file"
        raise InputError(f"active set '{asi.path}' ({asi.source}) {reason}; γ needs the .asi of potential "
                         f"'{yaml_path}' (train writes it; or compute it with pace_activeset)")
    return GammaPotential(yaml_path, asi.path, load_active_set(asi.path, yaml_path))


def check_validate_active_set(found: Found, potential: Path, b_basis: Optional[Path]) -> Optional[Path]:
    """The active set :func:`pace_worker.files.discovery.validate_active_set_file` found, checked against the potential; None
    if there is none."""
    if found.path is None:
        return None
    if b_basis is None:
        raise InputError(f"active set '{found.path}' needs the B-basis .yaml of potential '{potential}' "
                         "(γ cannot be computed from a .yace alone); put the .yaml next to it")
    load_active_set(found.path, b_basis)  # shapes must match the potential
    return found.path
