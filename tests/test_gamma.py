"""γ: sample's workers read pyace's own (bit for bit PyACECalculator's), and our numpy definition on
projections in memory (train's active-set check, DIRECT's γ column) equals it, per atom, on real
structures and a real active set."""
import numpy as np
import pytest
from ase.build import bulk

from pace_worker.ace import gamma as gamma_scorer
from pace_worker.ace.activeset import compute_active_set, load_active_set, load_bbasis, structure_gammas
from pace_worker.ace.descriptors import write_unfitted_basis
from pace_worker.ace.predictions import make_calculator
from pace_worker.ace.projections import BProjector
from pace_worker.algorithms.extrapolation_grade import extrapolation_grades
from pace_worker.config import DescriptorSettings
from pace_worker.toy_data import fcc_cells

SMALL = DescriptorSettings(cutoff=4.5, functions_per_element=12, nradmax_by_orders=[6, 3, 2],
                           lmax_by_orders=[0, 2, 1])


def mixed_cells(n, seed, rattle):
    """Cu/Al fcc cells: pure Cu, pure Al and mixed, rattled."""
    rng = np.random.default_rng(seed)
    cells = fcc_cells("Cu", n=n, seed=seed, rattle=rattle)
    for k, atoms in enumerate(cells):
        atoms.symbols = rng.choice(["Cu", "Al"], len(atoms)) if k % 3 else ["Cu", "Al"][k % 2] * len(atoms)
    return cells


@pytest.fixture(scope="module")
def potential_with_active_set(tmp_path_factory):
    """A small Cu/Al B-basis and the MaxVol active set of 24 cells, saved as .yaml + .asi."""
    folder = tmp_path_factory.mktemp("gamma")
    yaml, asi = folder / "p.yaml", folder / "p.asi"
    write_unfitted_basis(["Al", "Cu"], SMALL, yaml)
    compute_active_set(yaml, [a.repeat((2, 1, 1)) for a in mixed_cells(24, seed=1, rattle=0.1)]).save(asi)
    return yaml, asi


def pyace_gamma(yaml, asi, atoms):
    calc = make_calculator(str(yaml), str(asi))
    atoms = atoms.copy()
    atoms.calc = calc
    calc.calculate(atoms, properties=("energy", "forces"))
    return np.array(calc.results["gamma"])


def probes():
    """Inside and outside the active set's data: training-like cells, hot cells, squeezed cells."""
    squeezed = [bulk("Cu", "fcc", a=3.61 * f, cubic=True) for f in (0.88, 1.15)]
    return mixed_cells(4, seed=2, rattle=0.1) + mixed_cells(3, seed=5, rattle=0.3) + squeezed


def test_per_atom_gamma_equals_pyace_calculator(potential_with_active_set):
    """sample's γ is PyACECalculator's bit for bit, and the numpy definition on the same atoms'
    projections agrees with it to rounding; the projections kept beside γ are the ones computed
    without an active set."""
    yaml, asi = potential_with_active_set
    gamma_scorer.load_scorer(str(yaml), str(asi))
    structures = probes()
    scored = gamma_scorer.score_structures(structures)
    reference = [pyace_gamma(yaml, asi, a) for a in structures]
    inverse = load_active_set(asi, yaml).inverse
    plain = gamma_scorer.projections_chunk(structures)
    projector = BProjector(load_bbasis(yaml))
    for atoms, (gamma, projections), ref, kept in zip(structures, scored, reference, plain):
        np.testing.assert_array_equal(gamma, ref)
        assert projections.keys() == kept.keys() == set(atoms.get_chemical_symbols())
        for element, block in projections.items():
            np.testing.assert_array_equal(block, kept[element])
            mask = np.array(atoms.get_chemical_symbols()) == element
            np.testing.assert_allclose(extrapolation_grades(block, inverse[element]), ref[mask], rtol=1e-9,
                                       atol=1e-12)
        unscored = projector.blocks(projector.environment(atoms))  # no active set loaded
        names = projector.bbasis.elements_name
        assert {names[st]: b.tolist() for st, b in unscored.items()} == {e: b.tolist() for e, b in kept.items()}
    all_gammas = np.concatenate(reference)
    assert all_gammas.min() < 1 < all_gammas.max()  # both regimes are compared, not only one


def test_projections_come_back_only_from_the_threshold_up(potential_with_active_set):
    """score_structures keeps a structure's projections when its max γ reaches the threshold, and
    its γ either way; a projector without an active set refuses to grade."""
    yaml, asi = potential_with_active_set
    gamma_scorer.load_scorer(str(yaml), str(asi))
    structures = probes()
    gamma_max = np.array([g.max() for g, _ in gamma_scorer.score_structures(structures)])
    threshold = float(np.median(gamma_max))
    scored = gamma_scorer.score_structures(structures, keep_projections_above=threshold)
    assert [p is not None for _, p in scored] == list(gamma_max >= threshold)
    assert 0 < sum(p is None for _, p in scored) < len(structures)
    np.testing.assert_array_equal([g.max() for g, _ in scored], gamma_max)
    projector = BProjector(load_bbasis(yaml))
    with pytest.raises(ValueError, match="active set"):
        projector.graded_blocks(projector.environment(structures[0]))


def test_structure_max_gamma_equals_pyace_calculator(potential_with_active_set):
    yaml, asi = potential_with_active_set
    structures = probes()
    ours = structure_gammas(yaml, load_active_set(asi, yaml), structures)
    np.testing.assert_allclose(ours, [pyace_gamma(yaml, asi, a).max() for a in structures], rtol=1e-9)


def test_the_active_set_grades_its_own_rows_one():
    """A row of the active set A has γ = 1 exactly (row j of A·A⁻¹ is e_j); others are max |b A⁻¹|."""
    rng = np.random.default_rng(0)
    active = rng.standard_normal((5, 5))
    inverse = np.linalg.inv(active)
    np.testing.assert_allclose(extrapolation_grades(active, inverse), np.ones(5))
    b = 2.5 * active[3] - 0.5 * active[1]
    assert extrapolation_grades(b[None], inverse)[0] == pytest.approx(2.5)


def test_structure_key_is_the_fingerprints_first_128_bits_and_ignores_labels():
    from ase.calculators.singlepoint import SinglePointCalculator

    from pace_worker.fingerprint import structure_fingerprint, structure_key

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    moved = atoms.copy()
    moved.positions[0, 0] += 0.01
    labelled = atoms.copy()
    labelled.calc = SinglePointCalculator(labelled, energy=-1.0)
    labelled.info["config_type"] = "md"
    assert structure_key(atoms) == bytes.fromhex(structure_fingerprint(atoms))[:16]
    assert len(structure_key(atoms)) == 16
    assert structure_key(labelled) == structure_key(atoms)
    assert structure_key(moved) != structure_key(atoms)


def test_predictions_equal_pyace_calculator_bit_for_bit(potential_with_active_set, tmp_path):
    """validate's evaluator (pyace's compiled modules only, as PyACECalculator builds them) gives
    PyACECalculator's energy, forces, stress and γ exactly, from a .yaml with its active set and
    from the .yace (random function coefficients: non-zero energies and forces); from the .yace (the
    recursive evaluator) the same numbers as PyACECalculator's default product evaluator to 1e-12."""
    from pyace.basis import BBasisConfiguration

    from pace_worker.ace.potentials import write_yace
    from pace_worker.ace.predictions import load_potential, predict_chunk

    yaml, asi = potential_with_active_set
    config = BBasisConfiguration(str(yaml))
    config.set_func_coeffs(np.random.default_rng(0).normal(size=len(config.get_func_coeffs())))
    config.save(str(tmp_path / "p.yaml"))
    write_yace(tmp_path / "p.yaml", tmp_path / "p.yace")
    for potential, active_set in ((tmp_path / "p.yaml", str(asi)), (tmp_path / "p.yace", None)):
        load_potential(str(potential), active_set)
        structures = probes()
        predictions = predict_chunk(structures)
        calc = make_calculator(str(potential), active_set)
        for atoms, ours in zip(structures, predictions):
            atoms.calc = calc
            calc.calculate(atoms, properties=("energy", "forces", "stress"))
            assert ours.energy == calc.results["energy"] != 0.0
            np.testing.assert_array_equal(ours.forces, calc.results["forces"])
            np.testing.assert_array_equal(ours.stress, calc.results["stress"])
            if active_set is None:
                assert ours.gamma is None
            else:
                np.testing.assert_array_equal(ours.gamma, calc.results["gamma"])
        assert np.abs(np.concatenate([p.forces for p in predictions])).max() > 0.1
        if active_set is None:
            from pyace import PyACECalculator

            product = PyACECalculator(str(potential))  # pyace's default evaluator of a .yace
            assert type(product.evaluator).__name__ == "ACECTildeEvaluator"
            assert type(calc.evaluator).__name__ == "ACERecursiveEvaluator"
            for atoms, ours in zip(structures, predictions):
                product.calculate(atoms, properties=("energy", "forces", "stress"))
                assert abs(ours.energy - product.results["energy"]) <= 1e-12 * max(1.0, abs(ours.energy))
                np.testing.assert_allclose(ours.forces, product.results["forces"], rtol=0, atol=1e-12)
                np.testing.assert_allclose(ours.stress, product.results["stress"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("recursive_evaluator", [True, False])
def test_the_workers_evaluator_of_a_yace_follows_the_calculator_options(potential_with_active_set, tmp_path,
                                                                        monkeypatch, recursive_evaluator):
    """The workers build a .yace's evaluator as PyACECalculator does with CALCULATOR_OPTIONS: with
    the options changed, the same evaluator and the same numbers as that calculator's."""
    from pace_worker.ace import predictions
    from pace_worker.ace.potentials import write_yace

    monkeypatch.setitem(predictions.CALCULATOR_OPTIONS, "recursive_evaluator", recursive_evaluator)
    yaml, _ = potential_with_active_set
    write_yace(yaml, tmp_path / "p.yace")
    loaded = predictions.load_potential(str(tmp_path / "p.yace"))  # this path: loaded anew, by these options
    calc = make_calculator(str(tmp_path / "p.yace"))
    assert type(loaded.evaluator).__name__ == type(calc.evaluator).__name__ == (
        "ACERecursiveEvaluator" if recursive_evaluator else "ACECTildeEvaluator")
    atoms = probes()[0]
    ours = predictions.predict_chunk([atoms])[0]
    atoms.calc = calc
    calc.calculate(atoms, properties=("energy", "forces"))
    assert ours.energy == calc.results["energy"]
    np.testing.assert_array_equal(ours.forces, calc.results["forces"])
