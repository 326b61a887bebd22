"""BProjector gives exactly what pyace's compute_B_projections gives (it only reuses the calculator)."""
import numpy as np
import pytest
from ase.build import bulk
from pyace.activelearning import compute_B_projections

from pace_worker.ace.activeset import load_bbasis
from pace_worker.ace.descriptors import write_unfitted_basis
from pace_worker.ace.projections import BProjector
from pace_worker.config import DescriptorSettings
from pace_worker.files.structures import fully_periodic_or_not


@pytest.fixture(scope="module")
def three_element_basis(tmp_path_factory):
    path = tmp_path_factory.mktemp("basis") / "basis.yaml"
    write_unfitted_basis(["Al", "Cu", "Ni"], DescriptorSettings(functions_per_element=20), path)
    return load_bbasis(path)


def structures():
    rng = np.random.default_rng(3)
    cells = []
    for k in range(9):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1 + k % 2))
        atoms.symbols = rng.choice(["Cu", "Al"] if k % 3 else ["Al"], len(atoms))  # pure and mixed cells
        atoms.rattle(0.05, seed=k)
        cells.append(atoms)
    cluster = bulk("Cu", "fcc", a=3.6, cubic=True)
    cluster.pbc = False
    cells.insert(4, cluster)  # non-periodic
    return cells


def test_same_projections_and_owners_as_pyace(three_element_basis):
    pool = structures()
    ours, our_owner = BProjector(three_element_basis)(pool)
    ref, ref_owner = compute_B_projections(three_element_basis, pool, structure_ind_list=list(range(len(pool))))
    assert set(ours) == set(ref) == {0, 1, 2}
    for st in ref:
        assert ours[st].shape == ref[st].shape
        assert np.array_equal(ours[st], ref[st])
        assert np.array_equal(our_owner[st], ref_owner[st])
    assert len(ours[0]) > 0 and len(ours[1]) > 0 and len(ours[2]) == 0  # Al, Cu present; no Ni


def test_reused_projector_gives_the_same_twice(three_element_basis):
    projector = BProjector(three_element_basis)
    first, _ = projector(structures()[:3])
    projector(structures()[3:])
    again, _ = projector(structures()[:3])
    assert all(np.array_equal(first[st], again[st]) for st in first)


def test_slab_is_projected_as_its_periodic_copy_and_foreign_elements_are_refused(three_element_basis):
    slab = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    slab.pbc = (True, True, False)  # pyace itself refuses this
    slab.rattle(0.05, seed=1)
    with pytest.raises(ValueError, match="fully periodic"):
        compute_B_projections(three_element_basis, [slab])
    ours, _ = BProjector(three_element_basis)([slab])
    ref = compute_B_projections(three_element_basis, [fully_periodic_or_not(slab, three_element_basis.cutoffmax)])
    assert all(np.array_equal(ours[st], ref[st]) for st in ref)
    with pytest.raises(ValueError, match="not in the basis"):
        BProjector(three_element_basis)([bulk("Au", "fcc", a=4.1)])
