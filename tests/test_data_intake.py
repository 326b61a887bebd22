"""Reading datasets: formats, label names, energy-only structures; the stable split."""
from __future__ import annotations

import gzip
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import write_dataset

from pace_worker.algorithms.train_test_split import stable_split
from pace_worker.errors import InputError
from pace_worker.files.structures import read_labelled_structures


def test_extxyz_gz_and_pickle_give_the_same_labels(tmp_path, cu_structures):
    xyz = write_dataset(tmp_path / "d.xyz", cu_structures)
    with open(xyz, "rb") as src, gzip.open(tmp_path / "d.xyz.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    df = pd.DataFrame({"ase_atoms": [a.copy() for a in cu_structures],
                       "energy": [a.get_potential_energy() for a in cu_structures],
                       "forces": [a.get_forces() for a in cu_structures]})
    df.to_pickle(tmp_path / "d.pckl.gzip", compression="gzip")
    sets = [read_labelled_structures(tmp_path / name) for name in ("d.xyz", "d.xyz.gz", "d.pckl.gzip")]
    for s in sets[1:]:
        assert len(s) == len(sets[0])
        np.testing.assert_allclose(s.energies, sets[0].energies, rtol=1e-7)
        for f, f0 in zip(s.forces, sets[0].forces):
            np.testing.assert_allclose(f, f0, atol=1e-6)  # extxyz keeps 8 digits
    assert sets[0].stresses[0] is not None and sets[0].stresses[0].shape == (6,)


def test_labels_found_under_common_names_and_config_override(tmp_path, cu_structures):
    atoms = []
    for src in cu_structures[:3]:
        a = src.copy()
        a.info["DFT_energy"] = src.get_potential_energy()
        a.arrays["dft_forces"] = src.get_forces()
        a.info["my_e"] = 1.5
        atoms.append(a)
    path = write_dataset(tmp_path / "names.xyz", atoms)
    auto = read_labelled_structures(path)
    assert auto.energies[0] == pytest.approx(cu_structures[0].get_potential_energy())
    np.testing.assert_allclose(auto.forces[1], cu_structures[1].get_forces(), atol=1e-9)
    override = read_labelled_structures(path, energy_key="my_e")
    assert np.all(override.energies == 1.5)


def test_energy_only_structures_are_flagged(tmp_path, cu_structures):
    a = cu_structures[0].copy()
    a.info["energy"] = -1.0
    data = read_labelled_structures(write_dataset(tmp_path / "eo.xyz", [a] + list(cu_structures[1:3])))
    assert data.energy_only.tolist() == [True, False, False]


def test_non_periodic_close_atoms_are_found(tmp_path):
    from ase import Atoms

    dimer = Atoms("Cu2", positions=[[0, 0, 0], [0.4, 0, 0]])
    dimer.info["energy"] = 1.0
    with pytest.raises(InputError, match="0.400"):
        read_labelled_structures(write_dataset(tmp_path / "dimer.xyz", [dimer]))


def test_stable_split_never_moves_a_structure_between_sets_as_data_grow(cu_structures):
    from pace_worker.toy_data import emt_dataset

    first = list(cu_structures)
    grown = first + emt_dataset("Cu", n=30, seed=7)
    train1, test1 = stable_split(first, 0.2, seed=42)
    train2, test2 = stable_split(grown, 0.2, seed=42)
    assert set(test1) <= set(test2)
    assert set(train1) <= set(train2)
    assert 0 < len(test2) < len(grown)
    assert stable_split(grown, 0.2, seed=42) == (train2, test2)
    assert stable_split(grown, 0.2, seed=43) != (train2, test2)
    train_n, test_n = stable_split(grown, 5, seed=42)
    assert len(test_n) == 5 and len(train_n) == len(grown) - 5


def test_split_zero_keeps_everything_for_training(cu_structures):
    assert stable_split(cu_structures, 0, seed=1) == (list(range(len(cu_structures))), [])
