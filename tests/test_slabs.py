"""Slabs (pbc only in-plane), which pyace refuses as they are, go through train, sample and
validate as the same atoms made fully periodic with a cutoff of vacuum (same environments)."""
from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.build import fcc111
from conftest import META, TINY_CONFIG, run_cli, write_dataset

from pace_worker.ace.activeset import load_active_set, structure_gammas
from pace_worker.ace.predictions import predict
from pace_worker.files.structures import fully_periodic_or_not
from pace_worker.toy_data import label_with_emt


def cu_slabs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    slabs = []
    for k in range(n):
        slab = fcc111("Cu", size=(2, 2, 3), a=3.6 * (1 + rng.uniform(-0.02, 0.02)), vacuum=2.0)  # pbc (T, T, F)
        slab.rattle(0.05, seed=seed * 100 + k)
        slabs.append(slab)
    assert not slabs[0].pbc.all() and slabs[0].pbc.any()
    return slabs


@pytest.fixture(scope="module")
def slab_run(tmp_path_factory, cu_structures):
    """A fit on bulk Cu cells plus two slabs: train accepts them."""
    root = tmp_path_factory.mktemp("slabs")
    dataset = write_dataset(root / "train.xyz", list(cu_structures) + label_with_emt(cu_slabs(2)))
    (root / "config.yaml").write_text(TINY_CONFIG)
    (root / "meta.yaml").write_text(META)
    proc = run_cli("train", "--config", root / "config.yaml", "--meta-config", root / "meta.yaml",
                   "--dataset", dataset, "--iteration", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_train_accepts_slabs(slab_run):
    metrics = json.loads((slab_run / "train_metrics.json").read_text())
    assert (slab_run / "output_potential.yace").is_file() and (slab_run / "output_potential.asi").is_file()
    assert metrics["split"]["n_train"] + metrics["split"]["n_test"] == 16
    assert metrics["train"]["force_rmse_mev_per_A"] < 1e4  # the slabs' environments are sane


def test_validate_scores_slabs_as_their_periodic_copies(slab_run, tmp_path):
    slabs = label_with_emt(cu_slabs(3, seed=1))
    test_set = write_dataset(tmp_path / "slabs.xyz", slabs)
    out = tmp_path / "m.json"
    proc = run_cli("validate", "--potential", slab_run / "output_potential.yace", "--output", out,
                   "--test-set", test_set)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert metrics["n_structures"] == 3
    assert metrics["stress"] is None  # a slab's stress (of a changed cell) is not compared

    potential = slab_run / "output_potential.yace"
    as_slabs = predict(potential, slabs)
    periodic = predict(potential, [fully_periodic_or_not(s, 4.5) for s in slabs])
    for a, b, slab in zip(as_slabs, periodic, slabs):
        assert a.energy == pytest.approx(b.energy, abs=1e-9)
        assert np.allclose(a.forces, b.forces, atol=1e-9)
        assert abs(a.energy / len(slab) - slab.get_potential_energy() / len(slab)) < 1.0  # a sane energy


def test_sample_scores_slabs_as_their_periodic_copies(slab_run, tmp_path):
    candidates = write_dataset(tmp_path / "pool.xyz", cu_slabs(6, seed=2))
    pool = ase.io.read(candidates, index=":")  # as the command reads them (extxyz rounds positions)
    out = tmp_path / "picked.xyz"
    proc = run_cli("sample", "--config", slab_run / "config.yaml", "--meta-config", slab_run / "meta.yaml",
                   "--candidates", candidates, "--n_samples", 2, "--output", out,
                   "--potential", slab_run / "output_potential.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "picked_report.json").read_text())
    assert report["pool"]["usable"] + report["pool"]["not_extrapolative"] == 6

    yaml_path = slab_run / "output_potential.yaml"
    active = load_active_set(slab_run / "output_potential.asi", yaml_path)
    as_slabs = structure_gammas(yaml_path, active, pool)
    periodic = structure_gammas(yaml_path, active, [fully_periodic_or_not(s, 4.5) for s in pool])
    assert np.allclose(as_slabs, periodic, rtol=1e-12)
    picked = {p["pool_index"]: p["gamma_max"] for p in report["picks"]}
    for index, gamma in picked.items():
        assert gamma == pytest.approx(as_slabs[index], rel=1e-9)
