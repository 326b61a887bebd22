"""Linear ACE (pyace's B-projections and their gradients, exact least squares) and the streaming solver."""
from __future__ import annotations

import numpy as np
import pytest

from pace_worker.ace import linear_ace
from pace_worker.ace.default_basis import default_potential
from pace_worker.algorithms.streaming_least_squares import StreamingLeastSquares
from pace_worker.parallel.executor import ChunkExecutor
from pace_worker.toy_data import emt_dataset


def test_streaming_least_squares_equals_one_dense_solve_for_any_weights_and_leading_columns():
    rng = np.random.default_rng(3)
    a_energy, y_energy = rng.normal(size=(40, 12)), rng.normal(size=40)
    a_forces, y_forces = rng.normal(size=(300, 12)), rng.normal(size=300)
    solver = StreamingLeastSquares(12)
    for i in range(0, 40, 7):  # blocks smaller than the number of columns, too
        solver.add("energy", a_energy[i:i + 7], y_energy[i:i + 7])
    for i in range(0, 300, 64):
        solver.add("forces", a_forces[i:i + 64], y_forces[i:i + 64])
    assert solver.n_rows_ == {"energy": 40, "forces": 300}
    for k, weight in ((4, 10.0), (12, 1000.0)):
        dense = np.vstack([np.sqrt(weight) * a_energy[:, :k], a_forces[:, :k]])
        target = np.concatenate([np.sqrt(weight) * y_energy, y_forces])
        expected = np.linalg.lstsq(dense, target, rcond=None)[0]
        np.testing.assert_allclose(solver.solve({"energy": weight, "forces": 1.0}, k), expected, atol=1e-10)
    # a ridge shrinks the coefficients
    free = solver.solve({"energy": 1.0, "forces": 1.0})
    shrunk = solver.solve({"energy": 1.0, "forces": 1.0}, ridge=1.0)
    assert np.linalg.norm(shrunk) < np.linalg.norm(free)
    with pytest.raises(ValueError, match="no rows"):
        solver.solve({"stress": 1.0})


@pytest.fixture(scope="module")
def cu_linear(tmp_path_factory):
    """A linear fit of a small Cu basis (two nested sizes) on EMT data, and its design rows."""
    folder = tmp_path_factory.mktemp("linear")
    structures = emt_dataset("Cu", n=16, seed=4, repeat=(2, 1, 1))
    items = [(a, a.get_potential_energy(), a.get_forces()) for a in structures]
    section = default_potential(["Cu"], 4.5, 24)
    layout, big = linear_ace.nested_columns(section, [12, 24], fit_reference=True)
    big.save(str(folder / "basis.yaml"))
    task = linear_ace.DesignTask(str(folder / "basis.yaml"), layout, None)
    executor = ChunkExecutor(1, chunk_size=5, show_progress=False)
    blocks = list(executor.map(linear_ace.training_chunk, items, linear_ace.init_design_worker, (task,)))
    solver = linear_ace.accumulate(blocks, layout)
    rows = list(executor.map(linear_ace.validation_chunk, items, linear_ace.init_design_worker, (task,)))
    return {"folder": folder, "structures": structures, "section": section, "layout": layout, "solver": solver,
            "rows": rows, "items": items}


def test_the_published_fs_potential_gives_the_linear_models_energies_and_forces(cu_linear):
    from pyace import PyACECalculator

    layout, solver = cu_linear["layout"], cu_linear["solver"]
    coef = solver.solve({"energy": 1000.0, "forces": 1.0}, layout.columns_of(1))
    reference = linear_ace.fitted_reference(layout, coef, None)
    bconf = linear_ace.fs_potential(cu_linear["section"], layout, 1, coef, reference)
    path = cu_linear["folder"] / "potential.yaml"
    bconf.save(str(path))
    assert bconf.funcspecs_blocks[0].ndensityi == 2  # the FS potential pacemaker can refine further
    calc = PyACECalculator(str(path))
    energy_rows = np.vstack([b.energy_rows for b in cu_linear["rows"]])
    force_rows = np.vstack([b.force_rows for b in cu_linear["rows"]])
    predicted_epa = linear_ace.predict(energy_rows, coef)
    predicted_forces = linear_ace.predict(force_rows, coef).reshape(-1, 3)
    at = 0
    for i, atoms in enumerate(cu_linear["structures"]):
        a = atoms.copy()
        a.calc = calc
        n = len(a)
        # the linear model predicts energy per atom including the fitted reference energy
        assert a.get_potential_energy() / n + reference["Cu"] == pytest.approx(predicted_epa[i], abs=1e-8)
        np.testing.assert_allclose(a.get_forces(), predicted_forces[at:at + n], atol=1e-8)
        at += n
    # and it fits: force errors well below the forces themselves
    forces = np.concatenate([f for _, _, f in cu_linear["items"]])
    assert np.sqrt(np.mean((predicted_forces - forces) ** 2)) < 0.3 * np.sqrt(np.mean(forces ** 2))


def test_a_leading_block_is_the_fit_of_the_smaller_basis(cu_linear, tmp_path):
    layout = cu_linear["layout"]
    nested = cu_linear["solver"].solve({"energy": 100.0, "forces": 1.0}, layout.columns_of(0))
    small_layout, small = linear_ace.nested_columns(cu_linear["section"], [12], fit_reference=True)
    small.save(str(tmp_path / "small.yaml"))
    task = linear_ace.DesignTask(str(tmp_path / "small.yaml"), small_layout, None)
    executor = ChunkExecutor(1, chunk_size=16, show_progress=False)
    blocks = list(executor.map(linear_ace.training_chunk, cu_linear["items"], linear_ace.init_design_worker, (task,)))
    separate = linear_ace.accumulate(blocks, small_layout).solve({"energy": 100.0, "forces": 1.0})
    assert small_layout.keys == layout.keys[:layout.n_functions[0]]
    np.testing.assert_allclose(nested, separate, rtol=1e-6, atol=1e-9)


def test_a_section_with_a_nonlinear_first_density_is_not_fitted_linearly():
    section = default_potential(["Cu"], 4.5, 24)
    assert linear_ace.has_linear_first_density(section)
    section["embeddings"] = {"ALL": {"npot": "FinnisSinclair", "fs_parameters": [1, 0.5], "ndensity": 1}}
    assert not linear_ace.has_linear_first_density(section)


def test_two_elements_slabs_and_clusters_the_fs_potential_still_gives_the_linear_model(tmp_path):
    """Per-element column blocks, two reference energies, non-periodic and mixed-pbc structures."""
    from pyace import PyACECalculator

    from pace_worker.toy_data import family_structure, label_with_emt

    rng = np.random.default_rng(5)
    structures = label_with_emt([family_structure(f, rng) for f in ("alloy", "alloy", "alloy", "slab", "cluster",
                                                                     "alloy", "alloy", "fcc", "alloy", "alloy")])
    items = [(a, a.get_potential_energy(), a.get_forces()) for a in structures]
    section = default_potential(["Al", "Cu"], 4.5, 20)
    layout, big = linear_ace.nested_columns(section, [10, 20], fit_reference=True)
    assert layout.elements == ["Al", "Cu"] and layout.n_reference == 2
    big.save(str(tmp_path / "basis.yaml"))
    task = linear_ace.DesignTask(str(tmp_path / "basis.yaml"), layout, None)
    executor = ChunkExecutor(1, chunk_size=4, show_progress=False)
    solver = linear_ace.accumulate(executor.map(linear_ace.training_chunk, items, linear_ace.init_design_worker,
                                                (task,)), layout)
    rows = list(executor.map(linear_ace.validation_chunk, items, linear_ace.init_design_worker, (task,)))
    coef = solver.solve({"energy": 1000.0, "forces": 1.0}, layout.columns_of(1), 1e-10)
    reference = linear_ace.fitted_reference(layout, coef, None)
    linear_ace.fs_potential(section, layout, 1, coef, reference).save(str(tmp_path / "potential.yaml"))
    calc = PyACECalculator(str(tmp_path / "potential.yaml"))
    predicted_epa = linear_ace.predict(np.vstack([b.energy_rows for b in rows]), coef)
    predicted_forces = linear_ace.predict(np.vstack([b.force_rows for b in rows]), coef).reshape(-1, 3)
    at = 0
    from pace_worker.files.structures import fully_periodic_or_not

    for i, atoms in enumerate(structures):
        a = fully_periodic_or_not(atoms, 4.5).copy()  # a slab made periodic, as validate does for pyace
        a.calc = calc
        n = len(a)
        shift = sum(reference[s] for s in a.get_chemical_symbols()) / n
        assert a.get_potential_energy() / n + shift == pytest.approx(predicted_epa[i], abs=1e-8)
        np.testing.assert_allclose(a.get_forces(), predicted_forces[at:at + n], atol=1e-8)
        at += n
