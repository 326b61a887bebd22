"""Linear ACE: the least-squares coefficients of a fixed B-basis, from pyace's B-projections and their gradients.

A B-basis with one density and the identity embedding (``FinnisSinclairShiftedScaled`` with
``fs_parameters [1, 1]``) is linear in its coefficients: ``E = Σ_atoms Σ_f c_f B_f`` and
``F = Σ_f c_f ∂(−Σ_atoms B_f)/∂r``. pyace computes both (``ACECalculator.compute(env,
compute_projections=True, compute_b_grad=True)``, the calls ``pyace.linearacefit`` builds its design
matrix from), so the coefficients that minimise the weighted energy and force errors follow from
one linear least-squares problem, exactly, in one pass over the data — no optimizer steps.

Guarantees
----------
* One pass over the training structures gives every member of a nested family of bases (pacemaker's
  basis of ``n`` functions per element is contained in its basis of ``m > n``): the columns are
  ordered so that each smaller basis is a leading block, and
  :class:`~pace_worker.algorithms.streaming_least_squares.StreamingLeastSquares` solves any leading
  block and any energy/force weighting from the accumulated factors. Memory does not grow with the
  data (the factors are ``n_columns²``).
* Energies are fitted per atom with one reference energy per element fitted jointly (the
  composition columns), unless the reference energies are given; the potential records them as
  pacemaker's ``reference_energy`` metadata, so ``validate`` and pacemaker put energies on the same
  scale.
* :func:`fs_potential` puts the coefficients on the first density of the FS potential the fit asked
  for (the second density's coefficients zero): that potential gives the linear model's energies
  and forces exactly (tested) and is what pacemaker refines further.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from pace_worker.algorithms.streaming_least_squares import StreamingLeastSquares, triangular_factor
from pace_worker.files.structures import pyace_environment
from pace_worker.parallel import worker_state
from pace_worker.stack import import_pyace

LINEAR_EMBEDDING = {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": [1, 1], "ndensity": 1}
ENERGY, FORCES = "energy", "forces"


def has_linear_first_density(section: dict) -> bool:
    """Whether a pacemaker ``potential`` section's first density enters the energy linearly (the
    FS embeddings pacemaker's templates use: ``fs_parameters`` starting ``[1, 1]``)."""
    embeddings = section.get("embeddings") or {}
    if not embeddings:
        return False
    for emb in embeddings.values():
        params = list(emb.get("fs_parameters") or [])
        if emb.get("npot") not in ("FinnisSinclair", "FinnisSinclairShiftedScaled") or params[:2] != [1, 1]:
            return False
    return True


def linear_section(section: dict) -> dict:
    """The same basis functions and radial basis with one linear density."""
    linear = dict(section)
    linear["embeddings"] = {key: dict(LINEAR_EMBEDDING) for key in (section.get("embeddings") or {"ALL": {}})}
    linear.pop("initial_potential", None)
    return linear


def _function_key(elements: Sequence[str], ns, ls, LS) -> tuple:
    return (tuple(elements), tuple(ns), tuple(ls), tuple(LS))


def configuration_keys(bconf) -> list[tuple]:
    """Keys of the functions of a ``BBasisConfiguration``, block by block."""
    return [_function_key(f.elements, f.ns, f.ls, f.LS) for block in bconf.funcspecs_blocks for f in block.funcspecs]


def build_configuration(section: dict):
    import_pyace()
    from pyace.basisextension import construct_bbasisconfiguration

    return construct_bbasisconfiguration({k: v for k, v in section.items() if k != "initial_potential"})


def evaluator_order_keys(bconf) -> list[tuple]:
    """The keys of the functions in the order of pyace's evaluator (``ACEBBasisSet.basis_coeffs`` and
    the columns of projections and their gradients), for a one-density configuration."""
    from pyace import ACEBBasisSet

    bbasis = ACEBBasisSet(bconf)
    n = len(bbasis.basis_coeffs)
    bbasis.basis_coeffs = list(np.arange(1, n + 1, dtype=float))  # label each function by its position
    labelled = bbasis.to_BBasisConfiguration()
    keys: list = [None] * n
    for block in labelled.funcspecs_blocks:
        for f in block.funcspecs:
            keys[int(round(f.coeffs[0])) - 1] = _function_key(f.elements, f.ns, f.ls, f.LS)
    if any(k is None for k in keys):
        raise RuntimeError("pyace's evaluator order could not be matched to the configuration's functions")
    return keys


@dataclass
class NestedColumns:
    """Columns of the design: the reference-energy columns, then the functions of the smallest basis,
    then those the next basis adds, and so on."""

    elements: list[str]
    fit_reference: bool            # one reference-energy column per element first
    keys: list[tuple]              # function keys in column order (after the reference columns)
    sizes: list[int]               # functions per element of each nested basis
    n_functions: list[int]         # total functions of each nested basis
    evaluator_to_column: np.ndarray  # column (among the functions) of each evaluator function

    @property
    def n_reference(self) -> int:
        return len(self.elements) if self.fit_reference else 0

    @property
    def n_columns(self) -> int:
        return self.n_reference + len(self.keys)

    def columns_of(self, size_index: int) -> int:
        """Leading columns of the ``size_index``-th basis (reference columns included)."""
        return self.n_reference + self.n_functions[size_index]


def nested_columns(section: dict, sizes: Sequence[int], fit_reference: bool) -> tuple[NestedColumns, object]:
    """The column layout for ``sizes`` (functions per element, ascending) of ``section``'s basis,
    and the one-density configuration of the largest (the basis the design is computed with)."""
    sizes = sorted(set(int(s) for s in sizes))
    configs = []
    for size in sizes:
        spec = linear_section(section)
        spec["functions"] = {**spec.get("functions", {}), "number_of_functions_per_element": size}
        configs.append(build_configuration(spec))
    order: list[tuple] = []
    seen: set = set()
    n_functions = []
    for conf in configs:
        keys = configuration_keys(conf)
        missing = [k for k in order if k not in set(keys)]
        if missing:
            raise ValueError(f"the basis of {sizes} functions per element is not nested: {len(missing)} functions of a "
                             "smaller basis are missing from a larger one")
        for key in keys:
            if key not in seen:
                seen.add(key)
                order.append(key)
        n_functions.append(len(order))
    largest = configs[-1]
    evaluator_keys = evaluator_order_keys(largest)
    position = {key: i for i, key in enumerate(order)}
    from pyace import ACEBBasisSet

    elements = list(ACEBBasisSet(largest).elements_name)
    layout = NestedColumns(elements=elements, fit_reference=fit_reference, keys=order, sizes=sizes,
                           n_functions=n_functions,
                           evaluator_to_column=np.array([position[k] for k in evaluator_keys], dtype=int))
    return layout, largest


# ----------------------------------------------------------------------------- rows (on workers)
@dataclass
class DesignTask:
    """What a worker needs: the one-density basis (by path) and the column layout."""

    basis_path: str
    layout: NestedColumns
    reference: Optional[dict]  # fixed reference energies per element (None: fitted)


def _load(task: DesignTask):
    import_pyace()
    from pyace import ACEBBasisSet, BBasisConfiguration
    from pyace.calculator import ACECalculator
    from pyace.evaluator import ACEBEvaluator

    def loader():
        bbasis = ACEBBasisSet(BBasisConfiguration(task.basis_path))
        evaluator = ACEBEvaluator(bbasis)
        from pyace.activelearning import compute_number_of_functions

        counts = list(compute_number_of_functions(bbasis))
        shifts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        return bbasis, evaluator, ACECalculator(evaluator), shifts

    # keyed by the file's identity too: a basis re-written under the same name (a smaller size) is reloaded
    stat = Path(task.basis_path).stat()
    return worker_state.load("linear_ace_design", (task.basis_path, stat.st_mtime_ns, stat.st_size,
                                                   tuple(task.layout.sizes)), loader)


def init_design_worker(task: DesignTask) -> None:
    _load(task)
    worker_state.load("linear_ace_task", id(task), lambda: task)


def structure_rows(task: DesignTask, atoms, energy: float, forces: Optional[np.ndarray]):
    """``(energy_row, energy_target, force_rows, force_targets, shortest)`` of one structure in column
    order; ``shortest``: the shortest distance per pair of species indices (for the core repulsion)."""
    bbasis, _, calculator, shifts = _load(task)
    layout = task.layout
    index = {el: i for i, el in enumerate(bbasis.elements_name)}
    symbols = atoms.get_chemical_symbols()
    species = np.array([index[s] for s in symbols], dtype=int)
    env = pyace_environment(atoms, species, bbasis.cutoffmax)  # a slab or wire made fully periodic there
    calculator.compute(env, compute_projections=True, compute_b_grad=True)
    shortest = {tuple(sorted(bond)): float(d) for bond, d in env.get_minimal_nn_distance_per_bond().items()}
    n_atoms = len(symbols)
    n_functions = len(layout.keys)
    summed = np.zeros(n_functions)
    for st, projection in zip(species, calculator.projections):
        start = shifts[st]
        summed[layout.evaluator_to_column[start:start + len(projection)]] += projection
    energy_row = np.zeros(layout.n_columns)
    energy_row[layout.n_reference:] = summed / n_atoms
    target = float(energy) / n_atoms
    counts = {el: symbols.count(el) for el in layout.elements}
    if layout.fit_reference:
        energy_row[:layout.n_reference] = [counts[el] / n_atoms for el in layout.elements]
    elif task.reference:
        target -= sum(task.reference.get(el, 0.0) * c for el, c in counts.items()) / n_atoms
        target += float(task.reference.get("shift", 0.0))
    force_rows = force_targets = None
    if forces is not None:
        gradients = np.asarray(calculator.forces_bfuncs)  # [atoms, evaluator functions, 3]
        force_rows = np.zeros((n_atoms * 3, layout.n_columns))
        force_rows[:, layout.n_reference + layout.evaluator_to_column] = \
            gradients.transpose(0, 2, 1).reshape(n_atoms * 3, -1)
        force_targets = np.asarray(forces, dtype=float).reshape(-1)
    return energy_row, target, force_rows, force_targets, shortest


@dataclass
class RowBlock:
    """The rows of a chunk of structures: raw (validation) or as triangular factors (training)."""

    energy_rows: np.ndarray
    energy_targets: np.ndarray
    force_rows: Optional[np.ndarray] = None      # raw force rows (validation)
    force_targets: Optional[np.ndarray] = None
    force_factor: Optional[np.ndarray] = None    # R of [force rows | targets] (training)
    n_force_rows: int = 0
    shortest: dict = field(default_factory=dict)  # shortest distance per pair of species indices


def chunk_rows(chunk: Sequence[tuple], factor_forces: bool) -> RowBlock:
    """The design rows of a chunk of ``(atoms, energy, forces)`` items."""
    task = worker_state.loaded("linear_ace_task")
    e_rows, e_targets, f_rows, f_targets = [], [], [], []
    shortest: dict = {}
    for atoms, energy, forces in chunk:
        er, et, fr, ft, pairs = structure_rows(task, atoms, energy, forces)
        for bond, d in pairs.items():
            shortest[bond] = min(d, shortest.get(bond, np.inf))
        e_rows.append(er)
        e_targets.append(et)
        if fr is not None:
            f_rows.append(fr)
            f_targets.append(ft)
    block = RowBlock(np.array(e_rows), np.array(e_targets), shortest=shortest)
    if f_rows:
        rows, targets = np.vstack(f_rows), np.concatenate(f_targets)
        block.n_force_rows = len(rows)
        if factor_forces:
            block.force_factor = triangular_factor(np.hstack([rows, targets[:, None]]))
        else:
            block.force_rows, block.force_targets = rows, targets
    return block


def training_chunk(chunk):
    return chunk_rows(chunk, factor_forces=True)


def validation_chunk(chunk):
    return chunk_rows(chunk, factor_forces=False)


# ----------------------------------------------------------------------------- the fit
def fs_potential(section: dict, layout: NestedColumns, size_index: int, coefficients: np.ndarray,
                 reference: dict):
    """The FS potential of ``section`` at the ``size_index``-th size whose first density carries the
    linear coefficients (second density zero), with ``reference`` as its reference energies."""
    spec = dict(section)
    spec["functions"] = {**spec.get("functions", {}), "number_of_functions_per_element": layout.sizes[size_index]}
    bconf = build_configuration(spec)
    n = layout.n_functions[size_index]
    value = dict(zip(layout.keys[:n], coefficients[layout.n_reference:layout.n_reference + n]))
    blocks = []
    for block in bconf.funcspecs_blocks:
        specs = block.funcspecs
        for f in specs:
            key = _function_key(f.elements, f.ns, f.ls, f.LS)
            ndensity = len(f.coeffs)
            f.coeffs = [float(value[key])] + [0.0] * (ndensity - 1)
        block.funcspecs = specs
        blocks.append(block)
    bconf.funcspecs_blocks = blocks
    bconf.metadata["reference_energy"] = json.dumps({k: float(v) for k, v in reference.items()})
    return bconf


def fitted_reference(layout: NestedColumns, coefficients: np.ndarray, given: Optional[dict]) -> dict:
    """The reference energies the potential records: fitted (per element) or the given ones."""
    if layout.fit_reference:
        return {el: float(c) for el, c in zip(layout.elements, coefficients[:layout.n_reference])} | {"shift": 0.0}
    return dict(given or {})


def predict(rows: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    return rows[:, :len(coefficients)] @ coefficients


def accumulate(blocks, layout: NestedColumns, into: Optional[StreamingLeastSquares] = None) -> StreamingLeastSquares:
    """The least-squares factors of the training rows (from :func:`training_chunk` blocks), added to
    ``into`` when given."""
    ls = StreamingLeastSquares(layout.n_columns) if into is None else into
    for block in blocks:
        ls.add(ENERGY, block.energy_rows, block.energy_targets)
        if block.force_factor is not None:
            ls.add_factor(FORCES, block.force_factor, block.n_force_rows)
    return ls


def add_core_repulsion(bconf, shortest: dict) -> None:
    """pacemaker's automatic core repulsion (``repulsion: auto``): ZBL inside the shortest distance
    of each pair of elements in the training data (pyace's own functions, as pacemaker applies them)."""
    from pyace import ACEBBasisSet
    from pyace.generalfit import setup_zbl_inner_core_repulsion
    from pyace.utils.utils import complement_min_dist_dict

    elements = list(ACEBBasisSet(bconf).elements_name)
    complete = complement_min_dist_dict(shortest, {}, elements, verbose=False)
    setup_zbl_inner_core_repulsion(bconf, complete)
