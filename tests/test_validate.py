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

    from pace_worker.ace.potential_errors import corrected_energies

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
    ours = corrected_energies(numbers, energies, reference)
    assert ours.tobytes() == df["energy_corrected"].to_numpy(dtype=float).tobytes()


def test_per_structure_and_per_element_errors_are_those_of_each_structure_alone():
    """The per-structure force errors, computed on stacks of equal shapes, equal the same numpy
    operations on each structure alone, bit for bit; per-element errors are keyed by sorted symbol
    and count each element's atoms (mixed sizes, two elements, an energy-only structure)."""
    from pace_worker.algorithms.error_metrics import Labels, compute_metrics

    rng = np.random.default_rng(7)
    sizes = [1, 7, 32, 32, 7, 200, 32, 3]
    numbers = [rng.choice([29, 13], n) for n in sizes]  # Cu, Al
    reference = [rng.normal(size=(n, 3)) for n in sizes]
    predicted = [f + 10.0 ** rng.uniform(-4, 0) * rng.normal(size=f.shape) for f in reference]
    reference[4] = None  # energy-only
    energies = rng.normal(size=len(sizes))
    m = compute_metrics(numbers, ["all"] * len(sizes), Labels(energies, reference, [None] * len(sizes)),
                        Labels(energies + 0.01, predicted, [None] * len(sizes)))
    for k, (p, r) in enumerate(zip(predicted, reference)):
        if r is None:
            assert np.isnan(m.per_structure.force_rmse[k]) and np.isnan(m.per_structure.force_max_error[k])
            continue
        d = p - r
        assert m.per_structure.force_rmse[k] == 1e3 * np.sqrt(np.mean(d ** 2))
        assert m.per_structure.force_max_error[k] == 1e3 * np.max(np.linalg.norm(d, axis=1))
    assert list(m.per_element) == ["Al", "Cu"]
    with_forces = [k for k, r in enumerate(reference) if r is not None]
    for symbol, z in (("Al", 13), ("Cu", 29)):
        assert m.per_element[symbol].n_atoms == sum(int(np.sum(numbers[k] == z)) for k in with_forces)
        errors = np.concatenate([(predicted[k] - reference[k])[numbers[k] == z] for k in with_forces]) * 1e3
        assert m.per_element[symbol].force_rmse == pytest.approx(np.sqrt(np.mean(errors ** 2)), rel=1e-12)


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
