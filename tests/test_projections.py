"""BProjector gives exactly what pyace's compute_B_projections gives (it only reuses the calculator)."""
import numpy as np
import pytest
from ase.build import bulk
from pyace.activelearning import compute_B_projections, compute_number_of_functions

from pace_worker.ace.activeset import load_bbasis
from pace_worker.ace.descriptors import sums_by_owner, write_unfitted_basis
from pace_worker.ace.projections import BProjector, function_counts
from pace_worker.config import DescriptorSettings
from pace_worker.files.structures import fully_periodic_or_not, geometry_problem


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


def test_function_counts_are_pyaces_and_the_width_of_the_projections(three_element_basis):
    counts = function_counts(three_element_basis)
    assert counts == list(compute_number_of_functions(three_element_basis))
    assert len(counts) == 3 and min(counts) > 0
    projections, _ = BProjector(three_element_basis)(structures()[:3])
    assert [projections[st].shape[1] for st in range(3)] == counts


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


def test_environment_from_the_structures_own_arrays_is_pyaces(three_element_basis):
    """``pyace_environment`` hands pyace's builder the structure's own position and cell arrays
    (no copies): the environment is the one pyace's ``aseatoms_to_atomicenvironment`` builds from
    copies — periodic, cluster, a slab's periodic copy, positions stored in Fortran order — and
    the structure is left as it was."""
    from pyace.atomicenvironment import aseatoms_to_atomicenvironment

    from pace_worker.files.structures import pyace_environment

    slab = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    slab.pbc = (True, True, False)
    fortran = structures()[1].copy()
    fortran.arrays["positions"] = np.asfortranarray(fortran.positions)
    assert not fortran.arrays["positions"].flags.c_contiguous
    index = {el: i for i, el in enumerate(three_element_basis.elements_name)}
    cutoff = three_element_basis.cutoffmax
    for atoms in structures() + [slab, fortran]:
        before = atoms.positions.copy(), atoms.cell.array.copy()
        species = np.array([index[s] for s in atoms.get_chemical_symbols()])
        ours = pyace_environment(atoms, species, cutoff)
        ref = aseatoms_to_atomicenvironment(fully_periodic_or_not(atoms, cutoff), cutoff, index)
        assert ours.n_atoms_real == ref.n_atoms_real == len(atoms)
        assert np.array_equal(ours.x, ref.x) and ours.species_type == ref.species_type
        assert ours.neighbour_list == ref.neighbour_list and ours.origins == ref.origins
        assert sum(map(len, ours.neighbour_list)) > 0
        assert np.array_equal(atoms.positions, before[0]) and np.array_equal(atoms.cell.array, before[1])


def close_pair(atoms, distance=0.3):
    """``atoms`` with atom 1 moved to ``distance`` Å from atom 0."""
    atoms = atoms.copy()
    atoms.positions[1] = atoms.positions[0] + [distance, 0.0, 0.0]
    return atoms


def test_distance_rule_from_the_environment_names_what_geometry_problem_names(three_element_basis):
    """The rule on close atoms read from the projection's own neighbour list gives, structure for
    structure, the problem (reason and message) of the reference check, and an environment exactly
    for the usable structures whose elements the basis has."""
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    slab = cu.copy()
    slab.pbc = [True, True, False]
    cluster = cu.copy()
    cluster.pbc = False
    gold = cu.copy()
    gold.symbols[3] = "Au"  # an element the basis lacks
    one_atom = bulk("Cu", "sc", a=0.6)  # its own images 0.6 Å away: a single atom is never "too close"
    pool = [cu, close_pair(cu), close_pair(cu, 0.49), close_pair(cu, 0.51), slab, close_pair(slab), cluster,
            close_pair(cluster), gold, close_pair(gold), one_atom]
    projector = BProjector(three_element_basis)
    for min_distance in (0.0, 0.5, 7.0):  # 7 Å: beyond the cutoff, the environment cannot tell
        checked, envs = projector.checked_environments([(a, None) for a in pool], min_distance)
        for k, atoms in enumerate(pool):
            expected = geometry_problem(atoms, min_distance)
            assert checked[k][1] == (None if expected is None else f"{expected[0]}: {expected[1]}"), (k, min_distance)
            assert (checked[k][0] is None) == (expected is not None)
            assert (envs[k] is not None) == (expected is None and "Au" not in atoms.get_chemical_symbols())
    checked, _ = projector.checked_environments([(a, None) for a in pool], 0.5)
    assert [k for k, (a, _) in enumerate(checked) if a is None] == [1, 2, 5, 7, 9]  # the rule did flag pairs


def test_per_structure_sums_are_np_add_at_bit_for_bit():
    """Descriptor rows are summed per structure with one array operation per atom position; the
    numbers must be np.add.at's (atoms added one after another), or the features, and so
    direct_sample's picks, would move in the last bits."""
    rng = np.random.default_rng(7)
    sizes = rng.integers(0, 40, size=300)  # structures with 0 to 39 atoms of this element
    owner = np.repeat(np.arange(len(sizes)), sizes)
    block = rng.normal(size=(len(owner), 17)) * 10.0 ** rng.integers(-6, 6, size=(len(owner), 1))
    expected = np.zeros((len(sizes), 17))
    np.add.at(expected, owner, block)
    assert np.array_equal(sums_by_owner(block, owner, len(sizes)).view(np.uint64), expected.view(np.uint64))
    assert sums_by_owner(block[:0], owner[:0], 3).shape == (3, 17)
