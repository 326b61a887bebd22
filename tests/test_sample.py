"""sample with a real Cu/Al potential: maxvol/max_gamma find the out-of-distribution structures,
their labels help more than random ones, results are reproducible; bad input."""
from __future__ import annotations

import gzip
import json

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from conftest import assert_one_line_error, run_cli, write_dataset

from pace_worker.commands.sample import SampleRequest, sample
from pace_worker.config import MetaConfig, WorkerConfig
from pace_worker.toy_data import fcc_cells, label_with_emt

CUAL_CONFIG = """\
cutoff: 4.5
data: {test_size: 0}
potential:
  functions:
    number_of_functions_per_element: 10
    ALL: {nradmax_by_orders: [6, 3, 2], lmax_by_orders: [0, 2, 1]}
fit: {maxiter: 25}
backend: {batch_size: 50, display_step: 5}
"""


def alloyed(n, seed):
    rng = np.random.default_rng(seed)
    cells = fcc_cells("Cu", n=n, seed=seed, rattle=0.05, config_type="alloy")
    for atoms in cells:
        symbols = np.array(atoms.get_chemical_symbols())
        symbols[rng.random(len(symbols)) < 0.5] = "Al"
        atoms.set_chemical_symbols(symbols.tolist())
    return cells


@pytest.fixture(scope="module")
def cual(tmp_path_factory):
    """A small Cu/Al potential fitted on near-equilibrium pure cells, and a pool around it."""
    root = tmp_path_factory.mktemp("cual")
    train = label_with_emt(fcc_cells("Cu", n=8, seed=1, strain=0.01, rattle=0.03) +
                           fcc_cells("Al", n=8, seed=2, strain=0.01, rattle=0.03))
    write_dataset(root / "train.xyz", train)
    (root / "config.yaml").write_text(CUAL_CONFIG)
    (root / "meta.yaml").write_text("device: cpu\nthreads: 2\n")
    proc = run_cli("train", "--config", root / "config.yaml", "--meta-config", root / "meta.yaml",
                   "--dataset", root / "train.xyz", "--iteration", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    in_dist = (fcc_cells("Cu", n=12, seed=11, strain=0.01, rattle=0.03, config_type="in") +
               fcc_cells("Al", n=12, seed=12, strain=0.01, rattle=0.03, config_type="in"))
    out_dist = (fcc_cells("Cu", n=3, seed=13, strain=0.0, rattle=0.2, config_type="hot") +
                [a for a in fcc_cells("Al", n=3, seed=14, strain=0.0, rattle=0.03, config_type="strained")] +
                alloyed(2, seed=15))
    for atoms, f in zip(out_dist[3:6], (0.9, 0.92, 1.1)):
        atoms.set_cell(atoms.cell * f, scale_atoms=True)
    pool = in_dist + out_dist
    rng = np.random.default_rng(0)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    write_dataset(root / "pool.xyz", pool)
    return root, pool


def picks(root, strategy, n=6, **kw):
    return sample(SampleRequest(candidates=root / "pool.xyz", n_samples=n, output=root / f"{strategy}.xyz",
                                potential=root / "output_potential.yaml", strategy=strategy, **kw))


def ood_fraction(pool, indices):
    return np.mean([pool[i].info["config_type"] != "in" for i in indices])


def test_maxvol_and_max_gamma_find_the_out_of_distribution_structures(cual):
    root, pool = cual
    results = {s: picks(root, s) for s in ("maxvol", "max_gamma", "random")}
    fractions = {s: ood_fraction(pool, r.picks) for s, r in results.items()}
    assert fractions["maxvol"] >= 5 / 6, fractions
    assert fractions["max_gamma"] >= 5 / 6, fractions
    assert fractions["random"] < fractions["maxvol"], fractions
    for r in results.values():
        assert len(r.picks) == 6 and len(set(r.picks)) == 6
    report = results["maxvol"].report
    assert all(d["gain"] > 0 for d in report["logdet_per_element"].values())
    assert all(report["entered_active_set"][:4])
    assert report["pool"]["read"] == len(pool)
    assert report["pool"]["usable"] + report["pool"]["not_extrapolative"] == len(pool)
    assert all(p["gamma_max"] > report["gamma_min"] for p in report["picks"])
    written = ase.io.read(root / "maxvol.xyz", index=":")
    assert [a.info["pool_index"] for a in written] == results["maxvol"].picks
    for a in written:
        assert a.arrays["gamma"].shape == (len(a),)
        assert a.info["gamma_max"] == pytest.approx(a.arrays["gamma"].max())
        assert a.info["config_type"] == pool[a.info["pool_index"]].info["config_type"]  # original info kept


def test_same_inputs_same_picks_whatever_workers_and_chunks(cual):
    root, _ = cual
    for strategy in ("maxvol", "random"):
        a = picks(root, strategy, meta=MetaConfig(workers=1, chunk_size=100))
        b = picks(root, strategy, meta=MetaConfig(workers=2, chunk_size=3))
        assert a.picks == b.picks, strategy
    assert picks(root, "random", seed=1).picks != picks(root, "random", seed=2).picks


def test_a_compressed_pool_gives_the_same_picks(cual, tmp_path):
    root, _ = cual
    with open(root / "pool.xyz", "rb") as src, gzip.open(tmp_path / "pool.xyz.gz", "wb") as dst:
        dst.write(src.read())
    plain = picks(root, "maxvol", meta=MetaConfig(workers=2, chunk_size=5))
    packed = sample(SampleRequest(candidates=tmp_path / "pool.xyz.gz", n_samples=6, output=tmp_path / "sel.xyz",
                                  potential=root / "output_potential.yaml", meta=MetaConfig(workers=2, chunk_size=5)))
    assert packed.picks == plain.picks
    assert packed.report["pool"]["read"] == plain.report["pool"]["read"]


@pytest.mark.parametrize("suffix", [".xyz", ".xyz.gz"])
def test_picks_are_written_as_the_pool_gave_them(cual, tmp_path, suffix):
    """The workers send a structure back as its frame's text, parsed again only if picked: the
    written picks are the pool's structures, labels included, from a plain and a compressed pool."""
    root, pool = cual
    labelled = label_with_emt([atoms.copy() for atoms in pool])
    path = tmp_path / f"labelled{suffix}"
    ase.io.write(path, labelled, format="extxyz")
    result = sample(SampleRequest(candidates=path, n_samples=6, output=tmp_path / "sel.xyz",
                                  potential=root / "output_potential.yaml", meta=MetaConfig(workers=2, chunk_size=4)))
    written = ase.io.read(tmp_path / "sel.xyz", index=":")
    assert [a.info["pool_index"] for a in written] == result.picks and len(written) == 6
    for a in written:
        source = labelled[a.info["pool_index"]]
        assert np.array_equal(a.numbers, source.numbers) and np.allclose(a.positions, source.positions, atol=1e-8)
        assert a.get_potential_energy() == pytest.approx(source.get_potential_energy(), abs=1e-8)
        assert np.allclose(a.get_forces(), source.get_forces(), atol=1e-8)
        assert a.info["config_type"] == source.info["config_type"]


def test_gamma_window_skips_the_wildest(cual):
    root, pool = cual
    r = sample(SampleRequest(candidates=root / "pool.xyz", n_samples=3, output=root / "w.xyz",
                             potential=root / "output_potential.yaml", strategy="gamma_window"))
    report = r.report
    gammas = {p["pool_index"]: p["gamma_max"] for p in report["picks"]}
    lo, hi = report["pool"]["gamma_window"]
    assert all(lo <= g <= hi for g in gammas.values())
    assert (report["pool"]["above_gamma_hi"] + report["pool"]["outside_window"] + report["pool"]["usable"]
            + report["pool"]["not_extrapolative"] == len(pool))


def test_maxvol_picks_teach_the_potential_more_than_random_picks(cual, tmp_path):
    """Label the picks with EMT, warm-start a refit on train + picks, compare errors on the pool."""
    root, pool = cual
    train = ase.io.read(root / "train.xyz", index=":")
    labelled_pool = label_with_emt(pool)
    errors = {}
    for strategy in ("maxvol", "random"):
        chosen = picks(root, strategy, n=4, seed=3).picks
        folder = tmp_path / strategy
        folder.mkdir()
        write_dataset(folder / "train.xyz", train + [labelled_pool[i] for i in chosen])
        proc = run_cli("train", "--config", root / "config.yaml", "--dataset", folder / "train.xyz",
                       "--iteration", 2, "--initial-potential", root / "output_potential.yaml")
        assert proc.returncode == 0, proc.stderr[-3000:]
        write_dataset(folder / "pool.xyz", labelled_pool)
        proc = run_cli("validate", "--potential", folder / "output_potential.yace", "--output", folder / "v.json",
                       "--test-set", folder / "pool.xyz", "--no-plots")
        assert proc.returncode == 0, proc.stderr[-3000:]
        errors[strategy] = json.loads((folder / "v.json").read_text())["force_rmse_mev_per_A"]
    print("pool force RMSE after adding 4 picks (meV/A):", errors)
    assert errors["maxvol"] < errors["random"], errors


# ----------------------------------------------------------------------------- bad input
def fails(root, *args, words=(), code=2):
    proc = run_cli("sample", "--potential", root / "output_potential.yaml", *args)
    return assert_one_line_error(proc, *words, code=code)


def test_empty_pool(cual, tmp_path):
    root, _ = cual
    (tmp_path / "empty.xyz").write_text("")
    fails(root, "--candidates", tmp_path / "empty.xyz", "--n_samples", 3, "--output", tmp_path / "o.xyz",
          words=("empty.xyz", "no structures"))


def test_non_positive_n_samples(cual, tmp_path):
    root, _ = cual
    fails(root, "--candidates", root / "pool.xyz", "--n-samples", 0, "--output", tmp_path / "o.xyz",
          words=("--n_samples 0",))


def test_more_than_the_pool_returns_all_with_a_warning(cual, tmp_path):
    root, pool = cual
    (tmp_path / "config.yaml").write_text("sample: {gamma_min: 0}\n")  # every usable structure is eligible
    proc = run_cli("sample", "--potential", root / "output_potential.yaml", "--candidates", root / "pool.xyz",
                   "--n_samples", 500, "--output", tmp_path / "o.xyz", "--config", tmp_path / "config.yaml")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "only" in proc.stderr and "usable" in proc.stderr
    assert len(ase.io.read(tmp_path / "o.xyz", index=":")) == len(pool)


def test_yace_without_yaml(cual, tmp_path):
    root, _ = cual
    (tmp_path / "p.yace").write_text((root / "output_potential.yace").read_text())
    proc = run_cli("sample", "--potential", tmp_path / "p.yace", "--candidates", root / "pool.xyz",
                   "--n_samples", 2, "--output", tmp_path / "o.xyz")
    assert proc.returncode == 2 and "cannot be refitted nor give γ" in proc.stderr and "Traceback" not in proc.stderr


def test_active_set_of_another_potential(cual, tmp_path):
    root, _ = cual
    np.savez(open(tmp_path / "x.asi", "wb"), Al=np.eye(3), Cu=np.eye(3))
    fails(root, "--asi", tmp_path / "x.asi", "--candidates", root / "pool.xyz", "--n_samples", 2,
          "--output", tmp_path / "o.xyz", words=("x.asi", "another potential"))


def test_unreadable_candidates(cual, tmp_path):
    root, _ = cual
    (tmp_path / "junk.xyz").write_text("3\nnot a comment line = = \nCu 0 0\n")
    fails(root, "--candidates", tmp_path / "junk.xyz", "--n_samples", 2, "--output", tmp_path / "o.xyz",
          words=("junk.xyz", "structure 0"))


def test_unknown_elements_are_skipped_and_counted(cual, tmp_path):
    root, pool = cual
    write_dataset(tmp_path / "mixed.xyz", pool[:5] + [bulk("Ni", "fcc", a=3.52, cubic=True)])
    r = sample(SampleRequest(candidates=tmp_path / "mixed.xyz", n_samples=2, output=tmp_path / "o.xyz",
                             potential=root / "output_potential.yaml"))
    assert r.report["pool"]["unknown_elements"] == 1
    assert r.report["pool"]["usable"] + r.report["pool"]["not_extrapolative"] == 5


# ----------------------------------------------------------------------------- γ floor: no label on what is known
def own_training_structures(root):
    """The structures the potential was trained on (the dataset minus its test set)."""
    test = {a.info["dataset_index"] for a in ase.io.read(root / "test_set.xyz", index=":")} \
        if (root / "test_set.xyz").exists() else set()
    return [a for i, a in enumerate(ase.io.read(root / "train.xyz", index=":")) if i not in test]


@pytest.mark.parametrize("strategy", ["maxvol", "max_gamma", "gamma_window"])
def test_a_pool_of_the_training_structures_gives_nothing_to_learn(cual, tmp_path, strategy):
    root, _ = cual
    write_dataset(tmp_path / "own.xyz", own_training_structures(root))
    out = tmp_path / "picks.xyz"
    proc = run_cli("sample", "--candidates", tmp_path / "own.xyz", "--n_samples", 5, "--output", out,
                   "--potential", root / "output_potential.yaml", "--strategy", strategy)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "picks_report.json").read_text())
    assert report["nothing_to_learn"] is True and report["n_picked"] == 0 and report["n_eligible"] == 0
    assert report["pool"]["not_extrapolative"] == report["pool"]["read"] > 0
    assert out.read_bytes() == b"" and ase.io.read(str(out), ":", format="extxyz") == []
    assert "nothing left to learn" in proc.stdout


def test_k_extrapolative_candidates_give_exactly_those_k(cual, tmp_path):
    root, _ = cual
    own = own_training_structures(root)
    hot = fcc_cells("Cu", n=3, seed=31, strain=0.0, rattle=0.25, config_type="hot")
    pool = own[:5] + hot[:1] + own[5:9] + hot[1:] + own[9:]
    hot_indices = [i for i, a in enumerate(pool) if a.info.get("config_type") == "hot"]
    write_dataset(tmp_path / "pool.xyz", pool)
    for strategy in ("maxvol", "max_gamma"):
        result = sample(SampleRequest(candidates=tmp_path / "pool.xyz", n_samples=6, output=tmp_path / f"{strategy}.xyz",
                                      potential=root / "output_potential.yaml", strategy=strategy))
        assert sorted(result.picks) == hot_indices, strategy
        assert result.report["n_eligible"] == 3 and result.report["nothing_to_learn"] is False
        assert all(p["gamma_max"] > 1.01 for p in result.report["picks"])
    # gamma_min 0 restores "always N"
    config = WorkerConfig(sample={"gamma_min": 0})
    result = sample(SampleRequest(candidates=tmp_path / "pool.xyz", n_samples=6, output=tmp_path / "all.xyz",
                                  potential=root / "output_potential.yaml", config=config))
    assert len(result.picks) == 6 and set(hot_indices) <= set(result.picks)
