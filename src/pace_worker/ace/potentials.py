"""pacemaker potential files: B-basis ``.yaml`` (refittable, γ) and C-tilde ``.yace`` (LAMMPS)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np
import yaml

from pace_worker.ace.predictions import load_potential
from pace_worker.ace.projections import function_counts
from pace_worker.errors import InputError, first_line, missing_reason
from pace_worker.files.safe_yaml import load_yaml
from pace_worker.stack import import_pyace, import_pyace_core

log = logging.getLogger(__name__)


def resolve_b_basis(path: Union[str, Path], what: str) -> Path:
    """The B-basis .yaml for ``path``, checked to load and to be complete (:func:`check_b_basis`);
    a .yace is replaced by its sibling .yaml.

    ``what`` names the flag or key the path came from, for the error message.
    """
    path = Path(path)
    if path.suffix == ".yace":
        sibling = path.with_suffix(".yaml")
        if not sibling.is_file():
            raise InputError(f"{what} '{path}' is a .yace (C-tilde basis), which cannot be refitted nor give γ, and "
                             f"no '{sibling.name}' lies next to it; give the B-basis .yaml of that potential")
        log.info("%s: using %s (the B-basis next to the .yace)", what, sibling)
        path = sibling
    if not path.is_file():
        reason = missing_reason(path) if not path.exists() else "is not a file"
        raise InputError(f"{what} '{path}' {reason}; give the B-basis .yaml of a pacemaker potential")
    check_b_basis(path, what)
    return path


def check_b_basis(path: Path, what: str) -> None:
    """Raise an :class:`InputError` naming ``what`` unless ``path`` is a whole pacemaker B-basis.

    A file cut short can still load: cut at a line boundary it has fewer functions, cut before
    an element's functions it has none (and pyace prints to stdout), and tensorpotential then
    fails deep in the fit ("Dimensions must be equal, but are 8 and 5"). So, before the fit or
    any evaluation: the YAML is read safely (:mod:`pace_worker.files.safe_yaml`) and every
    element block has its functions and radial coefficients of its declared shape; pyace loads
    it; and the basis is consistent as pacemaker writes it and tensorpotential needs it: every
    element has functions, every pair of elements a bond, every bond exactly ``nradbase``
    radial (rank-1) functions, every function one coefficient per density of its element.
    """
    problem = b_basis_problem(path)
    if problem is not None:
        raise InputError(f"{what} '{path}' {problem}")


def b_basis_problem(path: Path) -> Optional[str]:
    """What :func:`check_b_basis` finds wrong with ``path`` (a phrase after the file's name), or None."""
    return _yaml_problem(path) or _basis_problem(path)


def _yaml_problem(path: Path) -> Optional[str]:
    try:
        data = load_yaml(path.read_bytes().decode("utf-8", errors="replace"), f"potential '{path}'")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        return f"is not a readable pacemaker B-basis YAML (YAML error{at}: the file is damaged or cut short)"
    except InputError as exc:
        return f"is not a usable YAML file ({str(exc).split(': ', 1)[-1]})"
    blocks = data.get("species") if isinstance(data, dict) else None
    if not isinstance(blocks, list) or not blocks or not all(isinstance(b, dict) for b in blocks):
        return "is not a pacemaker B-basis YAML (no 'species' list of element blocks)"
    for block in blocks:
        name = str(block.get("speciesblock", "?"))
        if len(name.split()) == 1 and not block.get("nbody"):
            return (f"is incomplete: element {name} has no functions (no 'nbody' list; a file cut short?); "
                    "give the complete .yaml")
        if "radcoefficients" in block:
            want = int(block.get("nradmaxi", 0)) * (int(block.get("lmaxi", 0)) + 1) * int(block.get("nradbaseij", 0))
            try:
                have = np.asarray(block["radcoefficients"], dtype=float).size if block["radcoefficients"] else 0
            except (TypeError, ValueError):
                return f"is damaged: the radial coefficients of block '{name}' are not a regular array of numbers"
            if have != want:
                return (f"is damaged: block '{name}' has {have} radial coefficients, its nradmaxi, lmaxi and "
                        f"nradbaseij ask for {want}; give the complete .yaml")
    return None


def _basis_problem(path: Path) -> Optional[str]:
    import_pyace_core()
    from pyace.basis import ACEBBasisSet, BBasisConfiguration

    try:
        basis = ACEBBasisSet(BBasisConfiguration(str(path)))
    except Exception as exc:
        return f"is not a readable pacemaker B-basis YAML ({first_line(exc)})"
    names = list(basis.elements_name)
    for mu, name in enumerate(names):
        functions = list(basis.basis_rank1[mu]) + list(basis.basis[mu])
        if not functions:
            return f"is incomplete: element {name} has no functions (a file cut short?); give the complete .yaml"
        ndensity = basis.map_embedding_specifications[mu].ndensity
        wrong = next((f for f in functions if len(f.coeffs) != ndensity), None)
        if wrong is not None:
            return (f"is damaged: a function of element {name} has {len(wrong.coeffs)} coefficients for "
                    f"{ndensity} densities; give the complete .yaml")
    bonds = basis.map_bond_specifications
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if (i, j) not in bonds:
                return f"is incomplete: it has no bond {a}-{b} (a file cut short?); give the complete .yaml"
            bond = bonds[(i, j)]
            rank1 = sum(1 for f in basis.basis_rank1[i] if f.mus[0] == j)
            if rank1 != bond.nradbasemax:
                return (f"is incomplete: bond {a}-{b} has {rank1} of its {bond.nradbasemax} radial (rank-1) functions "
                        "(a file cut short?), which pacemaker cannot fit; give the complete .yaml")
            size = int(np.size(bond.radcoefficients))
            if size != bond.nradmax * (bond.lmax + 1) * bond.nradbasemax:
                return (f"is damaged: bond {a}-{b} has {size} radial coefficients for nradmax {bond.nradmax}, lmax "
                        f"{bond.lmax}, nradbase {bond.nradbasemax}; give the complete .yaml")
    return None


def check_yace(path: Path) -> None:
    """Raise unless ``path`` is a complete .yace.

    pyace's C-tilde loader rejects a file cut inside an entry, but a file cut exactly at a line
    boundary loads with fewer functions. So: every element must have functions, and when the
    B-basis .yaml lies beside it (as ``train`` writes them), both must have the same rank-1
    functions per element (rank-1 functions map one to one between the two bases).
    """
    import_pyace_core()
    from pyace.basis import ACEBBasisSet, ACECTildeBasisSet, BBasisConfiguration

    basis = ACECTildeBasisSet(str(path))
    empty = [el for el, rank1, higher in zip(basis.elements_name, basis.basis_rank1, basis.basis)
             if len(rank1) + len(higher) == 0]
    if empty:
        raise ValueError(f"no functions for element(s) {', '.join(empty)}")
    sibling = Path(path).with_suffix(".yaml")
    if sibling.is_file():
        check_b_basis(sibling, f"the B-basis beside potential '{path}':")
        b_basis = ACEBBasisSet(BBasisConfiguration(str(sibling)))
        ours = dict(zip(basis.elements_name, (len(r) for r in basis.basis_rank1)))
        theirs = dict(zip(b_basis.elements_name, (len(r) for r in b_basis.basis_rank1)))
        if ours != theirs:
            raise ValueError(f"its rank-1 functions {ours} differ from those of {sibling.name} {theirs}; "
                             "the file is incomplete or belongs to another potential")


def basis_elements(path: Path) -> list[str]:
    import_pyace_core()
    from pyace.basis import ACEBBasisSet, BBasisConfiguration

    return list(ACEBBasisSet(BBasisConfiguration(str(path))).elements_name)


def functions_per_element(potential_yaml: Path) -> int:
    """The most B-functions any element of a potential (YAML path) has."""
    import_pyace_core()
    from pyace.basis import ACEBBasisSet, BBasisConfiguration

    return int(max(function_counts(ACEBBasisSet(BBasisConfiguration(str(potential_yaml))))))


def count_functions(potential) -> int:
    """Total number of B-functions of a potential given as a YAML path or a pacemaker dict."""
    import_pyace()
    from pyace import BBasisConfiguration
    from pyace.basisextension import construct_bbasisconfiguration

    if isinstance(potential, (str, Path)):
        return BBasisConfiguration(str(potential)).total_number_of_functions
    spec = {k: v for k, v in potential.items() if k != "initial_potential"}
    try:
        return construct_bbasisconfiguration(spec).total_number_of_functions
    except Exception as exc:
        raise InputError(f"config: pacemaker cannot build the potential section ({exc}); check potential.*")


def reference_energy(path: Path):
    """The reference energies pacemaker stored in a potential's metadata, or None."""
    import_pyace_core()
    from pyace.basis import BBasisConfiguration

    meta = BBasisConfiguration(str(path)).metadata
    return json.loads(meta["reference_energy"]) if "reference_energy" in meta else None


def write_yace(yaml_path: Path, yace_path: Path) -> int:
    """Convert a B-basis .yaml to a .yace (what ``pace_yaml2yace`` does); returns the function count."""
    import_pyace()
    from pyace import ACEBBasisSet, BBasisConfiguration

    bconf = BBasisConfiguration(str(yaml_path))
    ACEBBasisSet(bconf).to_ACECTildeBasisSet().save_yaml(str(yace_path))
    return int(bconf.total_number_of_functions)


def inner_cutoffs(path: Path) -> dict[tuple[str, str], float]:
    """``{(A, B): r_in}`` of a B-basis .yaml: below ``r_in`` a pair is inside the core repulsion
    (ZBL with ``repulsion: auto``, set to the shortest distance of the training data)."""
    data = load_yaml(Path(path).read_text(), f"potential '{path}'")
    cutoffs: dict[tuple[str, str], float] = {}
    for block in data.get("species") or []:
        names = str(block.get("speciesblock", "")).split()
        if "r_in" not in block or not names or len(names) > 2:
            continue
        a, b = (names[0], names[0]) if len(names) == 1 else names
        cutoffs[(a, b)] = cutoffs[(b, a)] = float(block["r_in"])
    return cutoffs


def open_potential(path: Path) -> tuple[Optional[Path], list[str]]:
    """``(its B-basis .yaml or None, elements)`` of a potential to evaluate (``.yace`` or ``.yaml``),
    checked to load with pyace; errors name the file."""
    path = Path(path)
    if not path.is_file():
        reason = missing_reason(path) if not path.exists() else "is not a file"
        raise InputError(f"potential '{path}' {reason}; give a .yace or .yaml written by train")
    if path.suffix not in (".yace", ".yaml", ".yml"):
        raise InputError(f"potential '{path}': expected a .yace or a .yaml (B-basis) file")
    try:
        if path.suffix == ".yace":
            check_yace(path)
        else:
            resolve_b_basis(path, "potential")
        elements = list(load_potential(str(path)).basis.elements_name)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"potential '{path}' cannot be loaded by pyace ({first_line(exc)}); is the file complete?")
    b_basis = path if path.suffix in (".yaml", ".yml") else path.with_suffix(".yaml")
    return (b_basis if b_basis.is_file() else None), elements
