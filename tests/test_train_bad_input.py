"""Each bad input: one line on stderr naming what is wrong, exit status 2, no traceback, and the
previous output_potential.* untouched. All of these fail before any fitting."""
from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms
from conftest import TINY_CONFIG, assert_one_line_error, run_cli, write_dataset

OUTPUTS = ("output_potential.yaml", "output_potential.yace", "output_potential.asi", "train_metrics.json")


@pytest.fixture()
def workspace(tmp_path, cu_structures):
    for name in OUTPUTS:  # a "good" previous potential that must survive every failure
        (tmp_path / name).write_text(f"previous {name}\n")
    (tmp_path / "config.yaml").write_text(TINY_CONFIG)
    write_dataset(tmp_path / "good.xyz", cu_structures)
    return tmp_path


def fails_cleanly(workspace, *extra, dataset=None, config=None, words=()):
    args = ["train", "--config", config or workspace / "config.yaml", "--dataset",
            dataset or workspace / "good.xyz", "--iteration", "1", *extra]
    line = assert_one_line_error(run_cli(*args), *words)
    for name in OUTPUTS:
        assert (workspace / name).read_text() == f"previous {name}\n", name
    assert not (workspace / "iterations").exists(), "nothing may be started for bad input"
    return line


def with_info_labels(structures):
    """Copies whose labels live in info/arrays under other names (REF_energy, REF_forces)."""
    atoms = []
    for src in structures:
        a = src.copy()
        a.info["REF_energy"] = src.get_potential_energy()
        a.arrays["REF_forces"] = src.get_forces().copy()
        atoms.append(a)
    return atoms


def test_missing_dataset(workspace):
    fails_cleanly(workspace, dataset=workspace / "nope.xyz", words=("nope.xyz", "does not exist"))


def test_dataset_that_is_not_a_readable_file(workspace):
    folder = workspace / "folder.xyz"
    folder.mkdir()
    fails_cleanly(workspace, dataset=folder, words=("folder.xyz", "not a file"))


def test_not_extxyz(workspace):
    path = workspace / "poscar.xyz"
    path.write_text("Cu\n1.0\n3.6 0 0\n0 3.6 0\n0 0 3.6\nCu\n1\nDirect\n0 0 0\n")
    fails_cleanly(workspace, dataset=path, words=("poscar.xyz", "extended XYZ"))


def test_structure_without_energy(workspace, cu_structures):
    atoms = with_info_labels(cu_structures[:4])
    del atoms[3].info["REF_energy"]
    path = write_dataset(workspace / "noenergy.xyz", atoms)
    fails_cleanly(workspace, dataset=path, words=("noenergy.xyz", "structure 3", "no energy", "energy_key"))


def test_nan_force(workspace, cu_structures):
    atoms = with_info_labels(cu_structures[:4])
    atoms[2].arrays["REF_forces"][1, 2] = np.nan
    path = write_dataset(workspace / "nanforce.xyz", atoms)
    fails_cleanly(workspace, dataset=path, words=("structure 2", "atom 1", "not finite"))


def test_forces_of_wrong_shape(workspace, cu_structures):
    import pandas as pd

    df = pd.DataFrame({"ase_atoms": [a.copy() for a in cu_structures[:4]],
                       "energy": [a.get_potential_energy() for a in cu_structures[:4]],
                       "forces": [a.get_forces() for a in cu_structures[:4]]})
    df.at[1, "forces"] = df.at[1, "forces"][:, :2]
    df.to_pickle(workspace / "bad.pckl.gzip", compression="gzip")
    fails_cleanly(workspace, dataset=workspace / "bad.pckl.gzip", words=("structure 1", "shape (4, 2)", "(4, 3)"))


def test_nan_energy(workspace, cu_structures):
    atoms = [a.copy() for a in cu_structures[:4]]
    for a, src in zip(atoms, cu_structures):
        a.info["dft_energy"] = src.get_potential_energy()
    atoms[1].info["dft_energy"] = float("inf")
    path = workspace / "inf.xyz"
    ase.io.write(path, atoms, format="extxyz")
    fails_cleanly(workspace, dataset=path, words=("structure 1", "energy is inf"))


def test_atoms_too_close(workspace, cu_structures):
    atoms = [a.copy() for a in cu_structures[:5]]
    for a, src in zip(atoms, cu_structures):
        a.info["energy"] = src.get_potential_energy()
    atoms[4].positions[2] = atoms[4].positions[1] + [0.3, 0.0, 0.0]
    path = workspace / "close.xyz"
    ase.io.write(path, atoms, format="extxyz")
    fails_cleanly(workspace, dataset=path, words=("structure 4", "atoms 1 (Cu) and 2 (Cu)", "0.300"))


def test_element_not_in_config(workspace, cu_structures):
    atoms = list(cu_structures[:5])
    al = Atoms("Al4", positions=cu_structures[0].positions, cell=cu_structures[0].cell, pbc=True)
    from pace_worker.toy_data import label_with_emt

    path = write_dataset(workspace / "alcu.xyz", atoms + label_with_emt([al]))
    cfg = workspace / "cu_only.yaml"
    cfg.write_text(TINY_CONFIG.replace("potential:\n", "potential:\n  elements: [Cu]\n"))
    fails_cleanly(workspace, dataset=path, config=cfg, words=("structure 5", "Al", "potential.elements"))


def test_too_few_structures_for_the_split(workspace, cu_structures):
    path = write_dataset(workspace / "one.xyz", cu_structures[:1])
    fails_cleanly(workspace, dataset=path, words=("1 structure", "test_size"))


def test_yaml_syntax_error_names_file_and_line(workspace):
    cfg = workspace / "broken.yaml"
    cfg.write_text("cutoff: 4.5\nfit:\n  maxiter: [1, 2\n  optimizer: BFGS\n")
    line = fails_cleanly(workspace, config=cfg, words=("broken.yaml:", "YAML syntax error"))
    assert "broken.yaml:4" in line or "broken.yaml:3" in line


def test_unknown_config_key_suggests_the_closest(workspace):
    cfg = workspace / "typo.yaml"
    cfg.write_text(TINY_CONFIG.replace("fit: {maxiter: 12}", "fit: {maxiters: 12}"))
    fails_cleanly(workspace, config=cfg, words=("fit.maxiters", "did you mean 'maxiter'"))
    cfg.write_text(TINY_CONFIG + "sampel: {}\n")
    fails_cleanly(workspace, config=cfg, words=("'sampel'", "did you mean 'sample'"))


def test_negative_iteration(workspace):
    proc = run_cli("train", "--config", workspace / "config.yaml", "--dataset", workspace / "good.xyz",
                   "--iteration", "-1")
    assert proc.returncode == 2 and "iteration" in proc.stderr and "Traceback" not in proc.stderr


def test_yace_without_yaml_as_initial_potential(workspace):
    (workspace / "lonely.yace").write_text("elements: [Cu]\n")
    fails_cleanly(workspace, "--initial-potential", workspace / "lonely.yace",
                  words=("lonely.yace", "cannot be refitted"))


def test_gzip_that_is_not_gzip(workspace):
    path = workspace / "fake.xyz.gz"
    path.write_bytes(b"not gzip at all")
    fails_cleanly(workspace, dataset=path, words=("fake.xyz.gz",))


def test_empty_dataset(workspace):
    path = workspace / "empty.xyz"
    path.write_text("")
    fails_cleanly(workspace, dataset=path, words=("empty.xyz",))
