"""direct_sample (DIRECT on ACE descriptors): one pick per clearly different family, better
coverage than random on real Si data, reproducible, non-periodic structures; bad input."""
from __future__ import annotations

import gzip
import json

import ase.io
import numpy as np
import pytest
from ase import Atoms
from conftest import REPO, assert_one_line_error, run_cli, write_dataset

from pace_worker.algorithms.cluster_picks import coverage_score, pick_per_cluster
from pace_worker.commands.direct_sample import DirectSampleRequest, direct_sample
from pace_worker.config import MetaConfig, WorkerConfig
from pace_worker.toy_data import unlabelled_pool

SI_TRAINING = REPO / "examples" / "si" / "data" / "Si_training.xyz"
FIVE = ("fcc", "bcc", "hcp", "slab", "cluster")


@pytest.fixture(scope="module")
def five_families(tmp_path_factory):
    """60 structures, 12 each of five clearly different families, shuffled."""
    root = tmp_path_factory.mktemp("families")
    pool = unlabelled_pool(60, families=FIVE, seed=3)
    order = np.random.default_rng(1).permutation(len(pool))
    return write_dataset(root / "pool.xyz", [pool[i] for i in order])


def test_five_families_give_one_pick_each(five_families, tmp_path):
    out = tmp_path / "diverse.xyz"
    proc = run_cli("direct_sample", "--input", five_families, "--output", out, "--n_clusters", 5)
    assert proc.returncode == 0, proc.stderr[-2000:]
    picks = ase.io.read(out, ":")
    assert sorted(a.info["config_type"] for a in picks) == sorted(FIVE)
    pool = ase.io.read(five_families, ":")
    for atoms in picks:  # original info kept, pool_index points at the same structure
        original = pool[atoms.info["pool_index"]]
        assert original.info["config_type"] == atoms.info["config_type"]
        assert np.allclose(original.positions, atoms.positions)
    # the non-periodic cluster and the mixed-pbc slab went through as they are
    cluster = next(a for a in picks if a.info["config_type"] == "cluster")
    assert not cluster.pbc.any()
    report = json.loads((tmp_path / "diverse_report.json").read_text())
    assert report["clusters"]["n"] == 5 and sum(report["clusters"]["sizes"]) == 60
    assert report["pca"]["n_components"] >= 1
    assert sorted({p["cluster_id"] for p in report["picks"]}) == [0, 1, 2, 3, 4]
    assert (tmp_path / "diverse_pca.png").stat().st_size > 10_000
    assert (tmp_path / "diverse_descriptor_basis.yaml").is_file()


def test_coverage_beats_random_on_si_pool(tmp_path):
    result = direct_sample(DirectSampleRequest(input=SI_TRAINING, output=tmp_path / "si.xyz", n_clusters=20,
                                               plots=False))
    coverage = result.report["coverage"]
    assert result.report["pool"]["usable"] == 214 and len(result.picks) == 20
    # the report's random baseline and a few more seeds: DIRECT covers more of the pool's PC ranges
    assert coverage["direct"] > coverage["random"]
    assert coverage["direct"] >= 0.4


def test_same_seed_same_picks_whatever_workers_and_chunks(five_families, tmp_path):
    picks = []
    for workers, chunk in ((1, 100), (2, 7)):
        for selection in ("random", "center"):
            r = direct_sample(DirectSampleRequest(input=five_families, output=tmp_path / f"o{workers}.xyz",
                                                  n_clusters=8, k_per_cluster=2, selection=selection, seed=5,
                                                  meta=MetaConfig(workers=workers, chunk_size=chunk), plots=False))
            picks.append((selection, r.picks, r.cluster_of_pick))
    assert picks[0] == picks[2] and picks[1] == picks[3]
    assert picks[0][1] != picks[1][1]  # random and center differ
    # two per cluster, all members of a smaller one
    sizes = r.report["clusters"]["sizes"]
    assert len(sizes) == 8 and len(picks[1][1]) == sum(min(2, s) for s in sizes) >= 15


def test_a_compressed_pool_gives_the_same_structures(five_families, tmp_path):
    with open(five_families, "rb") as src, gzip.open(tmp_path / "pool.xyz.gz", "wb") as dst:
        dst.write(src.read())
    results = [direct_sample(DirectSampleRequest(input=path, output=tmp_path / f"o{k}.xyz", n_clusters=6, plots=False,
                                                 meta=MetaConfig(workers=2, chunk_size=7)))
               for k, path in enumerate((five_families, tmp_path / "pool.xyz.gz"))]
    assert results[0].picks == results[1].picks
    plain, packed = (ase.io.read(tmp_path / f"o{k}.xyz", ":") for k in (0, 1))
    assert [a.info["pool_index"] for a in packed] == results[0].picks
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(plain, packed))


def test_given_basis_reproduces_the_default_one(five_families, tmp_path):
    first = direct_sample(DirectSampleRequest(input=five_families, output=tmp_path / "a.xyz", n_clusters=6,
                                              plots=False))
    again = direct_sample(DirectSampleRequest(input=five_families, output=tmp_path / "b.xyz", n_clusters=6,
                                              potential=first.files["descriptor_basis"], plots=False))
    assert again.picks == first.picks
    assert again.report["descriptor"]["basis"].startswith("potential")


def test_smallest_picks_fewest_atoms_per_cluster():
    X = np.array([[0.0], [0.1], [0.3], [5.0], [5.1]])  # centroid of cluster 0: 0.133
    labels = np.array([0, 0, 0, 1, 1])
    assert pick_per_cluster(X, labels, 1, "smallest", n_atoms=[30, 10, 20, 8, 4]) == [(1, 0), (4, 1)]
    assert pick_per_cluster(X, labels, 1, "center") == [(1, 0), (3, 1)]  # a tie: the first
    assert pick_per_cluster(X, labels, 5, "center") == [(1, 0), (0, 0), (2, 0), (3, 1), (4, 1)]


def test_coverage_score_counts_occupied_bins():
    pcs = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])  # bins of width 1 over [0, 10]: 5 occupied
    assert coverage_score(pcs, [0, 4], bins=10) == pytest.approx(2 / 5)
    assert coverage_score(pcs, range(5), bins=10) == pytest.approx(1.0)


def test_config_section_is_validated(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("direct_sample: {selecton: random}\n")
    proc = run_cli("direct_sample", "--config", config, "--input", SI_TRAINING, "--output", tmp_path / "o.xyz",
                   "--n_clusters", 3)
    assert proc.returncode == 2 and "did you mean 'selection'" in proc.stderr
    assert WorkerConfig().direct_sample.descriptor.cutoff == 5.0


# ----------------------------------------------------------------------------- bad input
def test_empty_pool(tmp_path):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    assert_one_line_error(run_cli("direct_sample", "--input", empty, "--output", tmp_path / "o.xyz", "--n_clusters", 2),
                    "empty.xyz", "no structures")


@pytest.mark.parametrize("n", [0, -3])
def test_n_clusters_not_positive(tmp_path, n):
    assert_one_line_error(run_cli("direct_sample", "--input", SI_TRAINING, "--output", tmp_path / "o.xyz",
                            "--n_clusters", n), "--n_clusters", "positive")


def test_unreadable_input(tmp_path):
    assert_one_line_error(run_cli("direct_sample", "--input", tmp_path, "--output", tmp_path / "o.xyz",
                            "--n_clusters", 2), "input")
    missing = tmp_path / "missing.xyz"
    assert_one_line_error(run_cli("direct_sample", "--input", missing, "--output", tmp_path / "o.xyz",
                            "--n_clusters", 2), "missing.xyz")


def test_structure_without_atoms_is_skipped_and_counted(tmp_path):
    """The pool rule: an unusable structure is skipped, counted by reason and named in one warning."""
    pool = unlabelled_pool(4, seed=2)
    pool.insert(2, Atoms(cell=[5, 5, 5], pbc=True))
    path = write_dataset(tmp_path / "pool.xyz", pool)
    proc = run_cli("direct_sample", "--input", path, "--output", tmp_path / "o.xyz", "--n_clusters", 2)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "structure 2" in warnings[0] and "no_atoms" in warnings[0]
    report = json.loads((tmp_path / "o_report.json").read_text())
    assert report["pool"]["skipped"]["by_reason"] == {"no_atoms": 1} and report["pool"]["usable"] == 4
    assert 2 not in [p["pool_index"] for p in report["picks"]]


def test_more_clusters_than_structures_picks_all(tmp_path):
    path = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(6, seed=4))
    proc = run_cli("direct_sample", "--input", path, "--output", tmp_path / "o.xyz", "--n_clusters", 50)
    assert proc.returncode == 0, proc.stderr
    assert "only 6 usable structures" in proc.stderr
    assert sorted(a.info["pool_index"] for a in ase.io.read(tmp_path / "o.xyz", ":")) == list(range(6))


def test_five_families_of_different_elements_get_one_pick_each(tmp_path):
    """Chemistry first: each chemical system gets its share of clusters, structure decides within it."""
    from pace_worker.toy_data import family_structure

    rng = np.random.default_rng(5)
    families = [("fcc", "Cu"), ("bcc", "Ni"), ("hcp", "Pd"), ("slab", "Ag"), ("cluster", "Au")]
    pool = [family_structure(f, rng, element=el, strain=0.02, rattle=0.05) for _ in range(15) for f, el in families]
    for atoms, (f, el) in zip(pool, families * 15):
        atoms.info["config_type"] = f"{f} {el}"
    path = write_dataset(tmp_path / "pool.xyz", pool)
    proc = run_cli("direct_sample", "--input", path, "--output", tmp_path / "five.xyz", "--n_clusters", 5)
    assert proc.returncode == 0, proc.stderr[-2000:]
    picked = ase.io.read(tmp_path / "five.xyz", index=":")
    assert sorted(a.info["config_type"] for a in picked) == sorted(f"{f} {el}" for f, el in families)
    report = json.loads((tmp_path / "five_report.json").read_text())
    assert [s["n_clusters"] for s in report["systems"]] == [1] * 5
    assert (tmp_path / "five_pca.png").stat().st_size > 10_000


def test_chemical_systems_and_square_root_allocation():
    from pace_worker.algorithms.direct_allocation import allocate_clusters, chemical_systems

    systems, of_row = chemical_systems(np.array([[1, 0], [0.5, 0.5], [1, 0], [0, 1], [0.2, 0.8]]))
    assert systems.tolist() == [[False, True], [True, False], [True, True]]
    assert of_row.tolist() == [1, 2, 1, 0, 2]
    assert allocate_clusters([85_700, 14_300], 1000) == [710, 290]
    assert allocate_clusters([15] * 5, 5) == [1] * 5
    assert allocate_clusters([3, 100], 50) == [3, 47]           # never more than a group has
    assert allocate_clusters([10, 1, 1], 2) == [1, 1, 0]        # too few clusters: the largest groups
    assert sum(allocate_clusters([1000, 30, 7, 1], 100)) == 100


def test_periodicity_floor_gives_a_compact_kind_its_proportional_share(tmp_path):
    from pace_worker.algorithms.direct_allocation import raise_to_proportional

    assert raise_to_proportional([3, 1, 1], [36, 12, 12]) == [3, 1, 1]       # at or above their share: kept
    assert raise_to_proportional([16, 1, 1], [750, 30, 30]) == [16, 1, 1]
    assert raise_to_proportional([620, 72, 18], [57_000, 14_300, 14_300]) == [472, 119, 119]
    assert raise_to_proportional([5, 0], [10, 10]) == [3, 2]
    # bulk fcc and vacancy cells (strained: varied) and two compact kinds, rattled Cu13 clusters and
    # one Cu(111) slab, a quarter of the pool each
    pool = unlabelled_pool(80, families=("fcc", "vacancy", "cluster", "slab"), seed=4)
    path = write_dataset(tmp_path / "pool.xyz", pool)
    result = direct_sample(DirectSampleRequest(input=path, output=tmp_path / "picks.xyz", n_clusters=12,
                                               plots=False))
    kinds = [pool[i].info["config_type"] for i in result.picks]
    strata = result.report["systems"][0]["strata"]
    for kind, name in (("cluster", "cluster or molecule (not periodic)"), ("slab", "slab (2D periodic)")):
        assert strata[name]["n_clusters_together"] < 3 == strata[name]["n_clusters"]  # raised to 12 × 20/80
        assert kinds.count(kind) == strata[name]["n_picked"] == 3
    assert kinds.count("fcc") + kinds.count("vacancy") == strata["bulk (3D periodic)"]["n_clusters"] == 6
    assert min(kinds.count("fcc"), kinds.count("vacancy")) >= 2 and len(kinds) == 12


def test_fewer_clusters_than_kinds_of_periodicity_keep_every_structure_in_a_cluster():
    from pace_worker.algorithms.direct_strata import StratifiedDirect

    # a varied bulk kind and two compact ones, 2 clusters for 3 kinds: one kind can have none
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 5, (40, 4)), rng.normal(0, 0.1, (10, 4)) + 1, rng.normal(0, 0.1, (10, 4)) - 1])
    kinds = np.array([3] * 40 + [2] * 10 + [0] * 10, dtype=np.int8)
    X = np.hstack([X, np.ones((60, 1))])  # one chemical system: one element's 4 columns, its composition fraction
    direct = StratifiedDirect(n_clusters=2, k_per_cluster=1, selection="center", random_state=0).fit(
        X, layout=(["Cu"], np.array([0, 4])), n_atoms=np.full(60, 4), periodic_dims=kinds)
    labels, picks = direct.labels_, direct.picks_
    assert labels.min() == 0 and sorted(np.unique(labels)) == [0, 1] and len(picks) == 2
    assert not direct.systems_[0].strata  # the clustering of all rows together stands


# ----------------------------------------------------------------------------- clusters shared by variety
def mixed_pool(counts: dict, seed: int) -> list:
    """``{(family, element): count}`` structures of :func:`pace_worker.toy_data.family_structure`,
    shuffled, each with ``config_type`` "<element> <family>"."""
    from pace_worker.toy_data import family_structure

    rng = np.random.default_rng(seed)
    pool = []
    for (family, element), count in counts.items():
        for _ in range(count):
            atoms = family_structure(family, rng, element=element)
            atoms.info["config_type"] = f"{element} {family}"
            pool.append(atoms)
    return [pool[i] for i in rng.permutation(len(pool))]


def picked_families(path) -> list[str]:
    return sorted(a.info["config_type"] for a in ase.io.read(path, ":"))


def test_clusters_follow_variety_not_head_count(tmp_path):
    """The issue's pool: three Cu families (fcc bulk, (111) slab, icosahedral cluster) in one
    chemical system, bcc Mo and hcp Mg in two more, 15 rattled copies each: 5 clusters give one
    pick per family (by head-count the one-family Mo system got 2 and the Cu clusters none)."""
    counts = {("fcc", "Cu"): 15, ("slab", "Cu"): 15, ("cluster", "Cu"): 15, ("bcc", "Mo"): 15, ("hcp", "Mg"): 15}
    path = write_dataset(tmp_path / "pool.xyz", mixed_pool(counts, seed=11))
    proc = run_cli("direct_sample", "--input", path, "--output", tmp_path / "five.xyz", "--n_clusters", 5, "--no-plots")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert picked_families(tmp_path / "five.xyz") == sorted(f"{el} {f}" for f, el in counts)
    systems = {tuple(s["elements"]): s for s in json.loads((tmp_path / "five_report.json").read_text())["systems"]}
    assert {k: (s["n_groups"], s["n_clusters"]) for k, s in systems.items()} == {
        ("Cu",): (3, 3), ("Mo",): (1, 1), ("Mg",): (1, 1)}


def test_a_small_varied_system_next_to_a_large_uniform_one(tmp_path):
    """200 bcc Mo cells (one family) next to 15 Cu structures of three families: as soon as there
    are as many clusters as families, every family has a pick (by head-count Mo took 3 of 4)."""
    counts = {("bcc", "Mo"): 200, ("fcc", "Cu"): 5, ("slab", "Cu"): 5, ("cluster", "Cu"): 5}
    path = write_dataset(tmp_path / "pool.xyz", mixed_pool(counts, seed=12))
    for n in (4, 7):
        out = tmp_path / f"picks{n}.xyz"
        proc = run_cli("direct_sample", "--input", path, "--output", out, "--n_clusters", n, "--no-plots")
        assert proc.returncode == 0, proc.stderr[-2000:]
        families = picked_families(out)
        assert set(families) == {f"{el} {f}" for f, el in counts} and len(families) == n, (n, families)
    systems = json.loads((tmp_path / "picks7_report.json").read_text())["systems"]
    # beyond the variety, the rest goes by the square root of the sizes: Mo 1 + 3, Cu 3 + 0
    assert [(s["elements"], s["n_groups"], s["n_clusters"]) for s in systems] == [(["Mo"], 1, 4), (["Cu"], 3, 3)]


def test_one_cluster_for_two_chemical_systems_gives_one_pick(tmp_path):
    """Fewer clusters than chemical systems is a valid request: the most varied system gets the
    one cluster, the other system none (its structures are in no cluster)."""
    counts = {("fcc", "Cu"): 6, ("slab", "Cu"): 6, ("fcc", "Ag"): 20}
    path = write_dataset(tmp_path / "pool.xyz", mixed_pool(counts, seed=13))
    proc = run_cli("direct_sample", "--input", path, "--output", tmp_path / "one.xyz", "--n_clusters", 1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(picked_families(tmp_path / "one.xyz")) == 1
    report = json.loads((tmp_path / "one_report.json").read_text())
    assert report["clusters"]["n"] == 1 and report["clusters"]["sizes"] == [12] and report["n_picked"] == 1
    assert [(s["elements"], s["n_clusters"], s["n_picked"]) for s in report["systems"]] == [
        (["Ag"], 0, 0), (["Cu"], 1, 1)]


def test_natural_cluster_count_and_allocation_by_variety():
    from pace_worker.algorithms.direct_allocation import allocate_by_variety, natural_cluster_count

    rng = np.random.default_rng(3)
    blobs = np.vstack([rng.normal(centre, 0.2, (15, 4)) for centre in (0, 4, 8, 12)])
    assert natural_cluster_count(blobs) == 4
    assert natural_cluster_count(blobs * 1e-3 + 7) == 4  # scale-free
    assert natural_cluster_count(rng.normal(0, 1, (300, 5))) == 1  # one blob
    assert natural_cluster_count(np.linspace(0, 1, 40)[:, None]) == 1  # a continuum (strain)
    assert natural_cluster_count(np.vstack([blobs[:1], blobs[15:16]])) == 1  # two rows are no groups
    assert allocate_by_variety([3, 1, 1], [45, 15, 15], 5) == [3, 1, 1]
    assert allocate_by_variety([3, 1, 1], [45, 15, 15], 2) == [1, 1, 0]   # the most varied, then the larger
    assert allocate_by_variety([1, 3], [200, 15], 4) == [1, 3]
    assert allocate_by_variety([1, 3], [200, 15], 10) == [6, 4]            # the rest by √size: 5 : 1
    assert allocate_by_variety([6, 2], [10, 10], 5) == [4, 1]              # in proportion to variety
    assert allocate_by_variety([3, 1], [85_700, 14_300], 1000) == [711, 289]
    assert allocate_by_variety([2, 2], [2, 1], 10) == [2, 1]               # never more than a system has
