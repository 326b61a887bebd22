"""validate on a potential fitted in the test session: exact against pacemaker, γ, outputs, bad input."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil

import numpy as np
import pytest
from ase.build import bulk
from conftest import assert_one_line_error, run_cli, write_dataset

from pace_worker.commands.validate import ValidateRequest, validate
from pace_worker.config import MetaConfig
from pace_worker.toy_data import label_with_emt


def run_validate(*args):
    proc = run_cli("validate", *args)
    return proc


def test_default_call_finds_the_test_set_and_matches_pacemaker(cold_run, tmp_path):
    root, train_metrics = cold_run["root"], cold_run["metrics"]
    out = tmp_path / "validation_metrics.json"
    proc = run_validate("--potential", root / "output_potential.yace", "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(out.read_text())
    assert m["schema"] == "pace-worker/validation_metrics/1"
    assert m["test_set"]["found_by"] == "train_metrics.json"
    assert m["test_set"]["n_structures"] == train_metrics["test"]["n_structures"]
    # hashed on a thread beside the errors and the outputs (started once the workers were done)
    assert m["test_set"]["sha256"] == hashlib.sha256(open(m["test_set"]["path"], "rb").read()).hexdigest()
    # same numbers as pacemaker's own test predictions (tensorpot), on the energy_corrected scale
    assert m["energy_rmse_mev_per_atom"] == pytest.approx(train_metrics["test"]["energy_rmse_mev_per_atom"], rel=1e-6)
    assert m["force_rmse_mev_per_A"] == pytest.approx(train_metrics["test"]["force_rmse_mev_per_A"], rel=1e-6)
    assert m["energy_scale"].startswith("energy_corrected")
    for key in ("json", "csv", "energy_parity", "force_parity", "force_error_vs_gamma"):
        assert tmp_path.joinpath(m["outputs"][key]).stat().st_size > 0, key
    with open(m["outputs"]["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == m["test_set"]["n_structures"]
    assert {"index", "n_atoms", "config_type", "energy_error_mev_per_atom", "force_rmse_mev_per_A",
            "force_max_error_mev_per_A", "gamma_max"} <= set(rows[0])


def test_yace_and_yaml_give_the_same_metrics(cold_run, tmp_path):
    root = cold_run["root"]
    for name in ("output_potential.yaml", "output_potential.yace"):  # no .asi: each file is evaluated itself
        shutil.copy(root / name, tmp_path / name)
    results = {}
    for suffix in ("yace", "yaml"):
        results[suffix] = validate(ValidateRequest(potential=tmp_path / f"output_potential.{suffix}",
                                                   output=tmp_path / f"{suffix}.json", test_set=root / "train.xyz",
                                                   plots=False, meta=MetaConfig(workers=1))).metrics
        assert results[suffix]["potential"]["evaluated"].endswith(suffix)
        assert results[suffix]["gamma"] is None
    for key in ("energy_rmse_mev_per_atom", "force_rmse_mev_per_A", "force_max_abs_mev_per_A", "energy_r2"):
        assert results["yace"][key] == pytest.approx(results["yaml"][key], rel=1e-6), key
    assert results["yace"]["n_energy_only"] == 1  # structure 3 of the training file has no forces


def test_gamma_separates_training_data_from_strained_cells(cold_run, tmp_path):
    import ase.io

    root = cold_run["root"]
    held_out = {a.info["dataset_index"] for a in ase.io.read(root / "test_set.xyz", index=":")}
    training = [a for i, a in enumerate(ase.io.read(root / "train.xyz", index=":")) if i not in held_out]
    train = validate(ValidateRequest(potential=root / "output_potential.yaml", output=tmp_path / "train.json",
                                     test_set=write_dataset(tmp_path / "training.xyz", training),
                                     plots=False)).metrics
    assert train["gamma"]["max"] <= 1.05  # the active set was built over exactly these structures
    strained = []
    for i, factor in enumerate((0.86, 0.9, 1.12, 1.18)):
        atoms = bulk("Cu", "fcc", a=3.61 * factor, cubic=True)
        atoms.rattle(0.02, seed=i)
        strained.append(atoms)
    far = validate(ValidateRequest(potential=root / "output_potential.yaml", output=tmp_path / "far.json",
                                   test_set=write_dataset(tmp_path / "far.xyz", label_with_emt(strained)),
                                   plots=True)).metrics
    assert far["gamma"]["fraction_above_1"] == 1.0
    assert far["gamma"]["max"] > 2
    assert (tmp_path / "far_force_error_vs_gamma.png").stat().st_size > 0


def test_results_do_not_depend_on_workers_or_chunks(cold_run, tmp_path):
    root = cold_run["root"]
    runs = [validate(ValidateRequest(potential=root / "output_potential.yaml", output=tmp_path / f"{w}_{c}.json",
                                     test_set=root / "train.xyz", plots=False,
                                     meta=MetaConfig(workers=w, chunk_size=c))).metrics
            for w, c in ((1, 100), (2, 3))]
    for key in ("energy_rmse_mev_per_atom", "force_rmse_mev_per_A", "worst", "per_group", "gamma"):
        assert runs[0][key] == runs[1][key], key


# ----------------------------------------------------------------------------- bad input
def fails(*args, words=()):
    return assert_one_line_error(run_validate(*args), *words)


def test_missing_potential(tmp_path):
    fails("--potential", tmp_path / "none.yace", "--output", tmp_path / "m.json", words=("none.yace", "does not exist"))


def test_corrupt_potential(cold_run, tmp_path):
    text = (cold_run["root"] / "output_potential.yace").read_text()
    (tmp_path / "cut.yace").write_text(text[: int(len(text) * 0.3)])  # cut inside an entry
    fails("--potential", tmp_path / "cut.yace", "--output", tmp_path / "m.json", words=("cut.yace", "cannot be loaded"))
    # cut exactly after a line in the function list: pyace still loads it; the .yaml beside it tells
    lines = text.splitlines(keepends=True)
    first_function = next(i for i, line in enumerate(lines) if line.lstrip().startswith("- {mu0"))
    shutil.copy(cold_run["root"] / "output_potential.yaml", tmp_path / "short.yaml")
    (tmp_path / "short.yace").write_text("".join(lines[: first_function + 2]))
    fails("--potential", tmp_path / "short.yace", "--output", tmp_path / "m.json",
          words=("short.yace", "cannot be loaded", "differ from those of short.yaml"))


def test_no_test_set_found_lists_what_was_tried(cold_run, tmp_path):
    shutil.copy(cold_run["root"] / "output_potential.yace", tmp_path / "p.yace")
    line = fails("--potential", tmp_path / "p.yace", "--output", tmp_path / "m.json", words=("no test set found",))
    assert "train_metrics.json" in line and "test_set.xyz" in line and "--test-set" in line


def test_test_set_without_energy(cold_run, tmp_path, cu_structures):
    atoms = [a.copy() for a in cu_structures[:3]]
    for a, src in zip(atoms, cu_structures):
        a.arrays["REF_forces"] = src.get_forces()
        a.info["REF_energy"] = src.get_potential_energy()
    del atoms[2].info["REF_energy"]
    path = write_dataset(tmp_path / "t.xyz", atoms)
    fails("--potential", cold_run["root"] / "output_potential.yace", "--output", tmp_path / "m.json",
          "--test-set", path, words=("structure 2", "no energy"))


def test_test_set_without_forces(cold_run, tmp_path, cu_structures):
    atoms = [a.copy() for a in cu_structures[:2]]
    for a, src in zip(atoms, cu_structures):
        a.info["energy"] = src.get_potential_energy()
    path = write_dataset(tmp_path / "t.xyz", atoms)
    fails("--potential", cold_run["root"] / "output_potential.yace", "--output", tmp_path / "m.json",
          "--test-set", path, words=("no forces",))


def test_element_the_potential_lacks(cold_run, tmp_path):
    al = label_with_emt([bulk("Al", "fcc", a=4.05, cubic=True)])
    path = write_dataset(tmp_path / "al.xyz", al)
    fails("--potential", cold_run["root"] / "output_potential.yace", "--output", tmp_path / "m.json",
          "--test-set", path, words=("structure 0", "Al", "not in the potential"))


def test_empty_test_set(cold_run, tmp_path):
    (tmp_path / "empty.xyz").write_text("")
    fails("--potential", cold_run["root"] / "output_potential.yace", "--output", tmp_path / "m.json",
          "--test-set", tmp_path / "empty.xyz", words=("empty.xyz", "no structures"))


def test_active_set_of_another_potential(cold_run, tmp_path):
    np.savez(open(tmp_path / "other.asi", "wb"), Cu=np.eye(5))
    fails("--potential", cold_run["root"] / "output_potential.yaml", "--output", tmp_path / "m.json",
          "--asi", tmp_path / "other.asi", words=("other.asi", "shape (5, 5)", "another potential"))


def test_close_atoms_are_named_before_a_later_structures_missing_energy(cold_run, tmp_path, cu_structures):
    """The rule on close atoms is read from the evaluation's neighbour list, but a test set's first
    problem in file order is still the one named: structure 1's pair, not structure 3's energy."""
    atoms = [a.copy() for a in cu_structures[:4]]
    for a, src in zip(atoms, cu_structures):
        a.info["REF_energy"] = src.get_potential_energy()
        a.arrays["REF_forces"] = src.get_forces()
    atoms[1].positions[2] = atoms[1].positions[0] + [0.05, 0.0, 0.0]
    path = write_dataset(tmp_path / "close.xyz", atoms)
    fails("--potential", cold_run["root"] / "output_potential.yace", "--output", tmp_path / "m.json",
          "--test-set", path, words=("structure 1", "atoms 0 (Cu) and 2 (Cu) are 0.050 Å apart"))
    del atoms[3].info["REF_energy"]
    path = write_dataset(tmp_path / "close_then_no_energy.xyz", atoms)
    fails("--potential", cold_run["root"] / "output_potential.yace", "--output", tmp_path / "m.json",
          "--test-set", path, words=("structure 1", "0.050 Å apart"))


@pytest.mark.parametrize("reference", [{"Al": -3.1234567, "Cu": -4.2345678, "shift": 0.0123456},
                                       {"Cu": -4.2345678}, "VASP_PBE_500_0.125_0.1_NM"])
def test_energies_corrected_from_atomic_numbers_as_pyace_corrects_them(reference):
    """The reference-energy correction from atomic numbers gives pyace's own numbers bit for bit."""
    import pandas as pd
    from ase import Atoms
    from pyace.process_df import compute_corrected_energy

    from pace_worker.ace.potential_errors import corrected_energies, element_counts

    rng = np.random.default_rng(5)
    numbers = [rng.choice([13, 29, 28], int(rng.integers(1, 40))) for _ in range(300)]
    numbers[3] = np.array([29] * 7)  # one element only
    energies = rng.normal(-4.0, 3.0, len(numbers)) * [len(z) for z in numbers]
    df = pd.DataFrame({"ase_atoms": [Atoms(numbers=z) for z in numbers], "energy": energies,
                       "NUMBER_OF_ATOMS": [len(z) for z in numbers]})
    if isinstance(reference, str):
        compute_corrected_energy(df, calculator_name=reference)
    else:
        compute_corrected_energy(df, esa_dict=reference)
    ours = corrected_energies(element_counts(numbers), energies, reference)
    assert ours.tobytes() == df["energy_corrected"].to_numpy(dtype=float).tobytes()


def test_metrics_from_per_structure_sums_equal_the_definitions_on_all_components():
    """The metrics come from per-structure columns made chunk by chunk (the workers') and joined:
    per-structure force errors equal the same numpy operations on each structure alone, bit for
    bit; the set's errors (RMSE, MAE, max, norm RMSE, R², per element, per group, stress) equal the
    definitions on all components at once to 1e-12, however the structures are chunked (mixed
    sizes, two elements, an energy-only structure, stresses of 6 and 9 values)."""
    from pace_worker.algorithms.error_metrics import EV_PER_A3_TO_GPA, StructureErrorColumns, compute_metrics

    rng = np.random.default_rng(7)
    sizes = [1, 7, 32, 32, 7, 200, 32, 3]
    numbers = [rng.choice([29, 13], n) for n in sizes]  # Cu, Al
    reference = [rng.normal(size=(n, 3)) + 0.3 for n in sizes]
    predicted = [f + 10.0 ** rng.uniform(-4, 0) * rng.normal(size=f.shape) for f in reference]
    reference[4] = None  # energy-only
    energies = rng.normal(size=len(sizes)) * sizes
    predicted_energies = energies + rng.normal(size=len(sizes)) * 0.01
    ref_stress = [rng.normal(size=6), None, rng.normal(size=9), rng.normal(size=6), None, None, None, None]
    pred_stress = [rng.normal(size=6), rng.normal(size=6), rng.normal(size=6), None, None, None, None, None]
    groups = ["a", "b", "a", "b", "a", "b", "a", "a"]

    def columns(rows):
        return StructureErrorColumns.of((29, 13), [numbers[k] for k in rows], predicted_energies[rows],
                                        [reference[k] for k in rows], [predicted[k] for k in rows],
                                        [ref_stress[k] for k in rows], [pred_stress[k] for k in rows])

    whole = compute_metrics(columns(np.arange(8)), energies, groups)
    chunked = compute_metrics(StructureErrorColumns.joined([columns(np.arange(3)), columns(np.arange(3, 8))]),
                              energies, groups)
    for m in (whole, chunked):
        for k, (p, r) in enumerate(zip(predicted, reference)):
            if r is None:
                assert np.isnan(m.per_structure.force_rmse[k]) and np.isnan(m.per_structure.force_max_error[k])
                continue
            d = p - r
            assert m.per_structure.force_rmse[k] == 1e3 * np.sqrt(np.mean(d ** 2))
            assert m.per_structure.force_max_error[k] == 1e3 * np.max(np.linalg.norm(d, axis=1))
        with_forces = [k for k, r in enumerate(reference) if r is not None]
        df = np.concatenate([predicted[k] - reference[k] for k in with_forces]) * 1e3
        ref = np.concatenate([reference[k] for k in with_forces]).ravel()
        expected = {"force_rmse": np.sqrt(np.mean(df ** 2)), "force_mae": np.mean(np.abs(df)),
                    "force_max_abs": np.max(np.abs(df)), "force_norm_rmse": np.sqrt(np.mean(np.sum(df ** 2, axis=1)))}
        for name, value in expected.items():
            assert getattr(m.errors, name) == pytest.approx(value, rel=1e-12), name
        assert m.force_r2 == pytest.approx(1 - np.sum((df / 1e3) ** 2) / np.sum((ref - ref.mean()) ** 2), rel=1e-12)
        assert m.n_energy_only == 1 and m.n_atoms == sum(sizes)
        assert list(m.per_element) == ["Al", "Cu"]
        for symbol, z in (("Al", 13), ("Cu", 29)):
            assert m.per_element[symbol].n_atoms == sum(int(np.sum(numbers[k] == z)) for k in with_forces)
            errors = np.concatenate([(predicted[k] - reference[k])[numbers[k] == z] for k in with_forces]) * 1e3
            assert m.per_element[symbol].force_rmse == pytest.approx(np.sqrt(np.mean(errors ** 2)), rel=1e-12)
            assert m.per_element[symbol].force_mae == pytest.approx(np.mean(np.abs(errors)), rel=1e-12)
        in_a = [k for k in with_forces if groups[k] == "a"]
        df_a = np.concatenate([predicted[k] - reference[k] for k in in_a]) * 1e3
        assert m.per_group["a"].force_mae == pytest.approx(np.mean(np.abs(df_a)), rel=1e-12)
        assert m.per_group["a"].n_structures == groups.count("a")
        ds = np.array([pred_stress[0] - ref_stress[0], pred_stress[2] - ref_stress[2][[0, 4, 8, 5, 2, 1]]])
        assert m.stress.n_structures == 2
        assert m.stress.rmse == pytest.approx(np.sqrt(np.mean((ds * EV_PER_A3_TO_GPA) ** 2)), rel=1e-12)
    assert whole.per_structure.force_rmse.tobytes() == chunked.per_structure.force_rmse.tobytes()


def test_force_sample_is_evenly_spaced_bounded_and_the_structures_own_forces(cold_run, monkeypatch):
    """The forces that come back for the parity plot: those of every n-th structure with forces
    (n from the test set's size, doubled while the sample holds too many atoms), each structure's
    reference forces as the file gives them and pyace's predicted forces, whatever the chunks."""
    import ase.io

    from pace_worker.ace import labelled_evaluation
    from pace_worker.ace.labelled_evaluation import TestSetFile
    from pace_worker.ace.potential_errors import evaluate_potential
    from pace_worker.ace.predictions import make_calculator
    from pace_worker.files.structures import LabelKeys
    from pace_worker.parallel.executor import ChunkExecutor

    root = cold_run["root"]
    potential = root / "output_potential.yaml"
    structures = ase.io.read(root / "train.xyz", index=":")  # 14 cells, structure 3 energy-only
    monkeypatch.setattr(labelled_evaluation, "FORCE_SAMPLE_STRUCTURES", 7)  # every 2nd
    test_set = TestSetFile(root / "train.xyz", LabelKeys(), 0.1, ("Cu",))
    calc = make_calculator(potential)
    samples = {}
    for atoms_cap in (10 ** 6, 2 * len(structures[0]) + 1):
        monkeypatch.setattr(labelled_evaluation, "FORCE_SAMPLE_ATOMS", atoms_cap)
        result = evaluate_potential(potential, None, potential, test_set, ChunkExecutor(workers=2, chunk_size=3),
                                    force_sample=True)
        sample = samples[atoms_cap] = result.evaluated.force_sample
        assert int(sample.atoms.sum()) <= atoms_cap or len(sample) == 1
        starts = np.concatenate([[0], np.cumsum(sample.atoms)])
        for k, index in enumerate(sample.structures):
            atoms = structures[index]
            mine = slice(starts[k], starts[k + 1])
            assert sample.reference[mine].tobytes() == atoms.get_forces().tobytes()
            assert sample.numbers[mine].tolist() == atoms.numbers.tolist()
            np.testing.assert_allclose(sample.predicted[mine], calc.get_forces(atoms), rtol=0, atol=1e-12)
    assert samples[10 ** 6].structures.tolist() == [0, 2, 4, 6, 8, 10, 12]
    assert samples[2 * len(structures[0]) + 1].structures.tolist() == [0, 8]
    no_sample = evaluate_potential(potential, None, potential, test_set, ChunkExecutor(workers=1, chunk_size=5))
    assert len(no_sample.evaluated.force_sample) == 0


def test_the_test_sets_sha256_on_a_thread_is_the_files_and_raises_its_error(tmp_path):
    """validate hashes the test set on a thread while it computes the errors and writes
    (``FileSha256Meanwhile``): the same digest as hashing the bytes here, over several read
    blocks; a file that cannot be read raises its error where the digest is asked for."""

    from pace_worker.files.structures import FileSha256Meanwhile

    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    (tmp_path / "test_set.xyz").write_bytes(data)
    hashing = FileSha256Meanwhile(tmp_path / "test_set.xyz")
    hashing.start()
    assert hashing.result() == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError):
        FileSha256Meanwhile(tmp_path / "gone.xyz").result()
