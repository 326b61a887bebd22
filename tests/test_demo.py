"""The demo's active-learning loop, small: per seed, DIRECT initial set → train → MD exploration with γ →
maxvol (or random) picks → EMT labels → warm-started retrain → validate on the seed's held-out set;
then labels to a target test error per strategy and seed, and their ratios."""
from __future__ import annotations

import json

import ase.io
from conftest import run_cli

from pace_worker.commands.demo import (DemoRequest, active_learning_demo, label_ratios, labels_to_target,
                                       labels_to_target_table)

SMALL_CONFIG = """\
cutoff: 4.5
data: {test_size: 0}
potential:
  functions:
    number_of_functions_per_element: 12
    ALL: {nradmax_by_orders: [6, 3, 2], lmax_by_orders: [0, 2, 1]}
fit: {maxiter: 40}
backend: {batch_size: 100, display_step: 20}
"""


def test_two_seeds_of_maxvol_and_random_learn_from_exploration(tmp_path):
    (tmp_path / "config.yaml").write_text(SMALL_CONFIG)  # the demo keeps a config.yaml it finds
    result = active_learning_demo(DemoRequest(workdir=tmp_path, iterations=2, strategies=("maxvol", "random"),
                                              seeds=(0, 1), pool_size=60, initial_labels=8, labels_per_iteration=4,
                                              md_steps=60, md_starts=2, test_structures=30, target_force_rmse=None,
                                              show_progress=False))
    assert [(r.seed, r.strategy, r.labels) for r in result.rows] == [
        (seed, strategy, labels) for seed in (0, 1) for strategy in ("maxvol", "random") for labels in (8, 12)]
    for seed in (0, 1):
        first, second = [r for r in result.rows if (r.seed, r.strategy) == (seed, "maxvol")]
        # exploration with the first potential ran MD, measured γ and left candidates
        assert first.candidates > 0 and first.exploration_gamma_max > 0
        folder = tmp_path / f"seed_{seed}" / "maxvol"
        assert len(ase.io.read(folder / "candidates_1.xyz", ":")) == first.candidates
        picks = ase.io.read(folder / "picks_1.xyz", ":")
        assert len(picks) == 4 and all(a.info["config_type"].startswith("md_") for a in picks)
        # the second potential was warm-started on 12 labels and is better on this seed's held-out test set
        labels = ase.io.read(folder / "labels_2.xyz", ":")
        assert len(labels) == 12 and all("energy" in a.calc.results for a in labels)
        assert json.loads((folder / "iteration_2" / "train_metrics.json").read_text())["mode"] == "warm"
        print(f"seed {seed} maxvol test F RMSE:", first.force_rmse_mev_per_A, "->", second.force_rmse_mev_per_A)
        assert second.force_rmse_mev_per_A < first.force_rmse_mev_per_A
        # both strategies start from the same potential; each seed has its own test set
        assert [r.force_rmse_mev_per_A for r in result.rows if (r.seed, r.iteration) == (seed, 1)] == [
            first.force_rmse_mev_per_A] * 2
        assert len(ase.io.read(tmp_path / f"seed_{seed}" / "test_set.xyz", ":")) == 30
    assert (ase.io.read(tmp_path / "seed_0" / "test_set.xyz", "0").positions.tolist()
            != ase.io.read(tmp_path / "seed_1" / "test_set.xyz", "0").positions.tolist())

    # without a target nothing is reached: every loop spent its budget, no ratio is known
    assert all(not n.reached and n.labels == 12 for n in result.labels_to_target)
    assert [(r.seed, r.bound, r.ratio) for r in result.ratios] == [(0, "?", None), (1, "?", None)]
    # a target between the measured errors: labels to target are those of the first potential at or below it
    errors = sorted(r.force_rmse_mev_per_A for r in result.rows)
    target = (errors[0] + errors[1]) / 2
    needed = labels_to_target(result.rows, target)
    best = min(result.rows, key=lambda r: r.force_rmse_mev_per_A)
    assert [(n.seed, n.strategy) for n in needed if n.reached] == [(best.seed, best.strategy)]
    assert next(n for n in needed if n.reached).labels == best.labels == 12
    ratios = label_ratios(needed, "maxvol")
    assert [r.bound for r in ratios if r.seed == best.seed] == ["<" if best.strategy == "maxvol" else ">"]
    assert [r.bound for r in ratios if r.seed != best.seed] == ["?"]

    summary = json.loads(result.files["summary"].read_text())
    assert summary["schema"] == "pace-worker/demo_summary/2" and summary["seeds"] == [0, 1]
    assert summary["label_budget"] == 12 and summary["wall_time_s"] > 0
    assert [r["labels"] for r in summary["rows"]] == [8, 12] * 4
    assert [(n["seed"], n["strategy"], n["reached"]) for n in summary["labels_to_target"]] == [
        (0, "maxvol", False), (0, "random", False), (1, "maxvol", False), (1, "random", False)]
    table = labels_to_target_table(result)
    assert table.count(">12") == 4 and "maxvol/random" in table
    assert result.files["learning_curve"].stat().st_size > 10_000


def test_a_reached_target_stops_the_loop(tmp_path):
    (tmp_path / "config.yaml").write_text(SMALL_CONFIG)
    result = active_learning_demo(DemoRequest(workdir=tmp_path, iterations=3, strategies=("maxvol",), seeds=(3,),
                                              pool_size=40, initial_labels=8, test_structures=12,
                                              target_force_rmse=1e12, show_progress=False))
    (row,) = result.rows  # the first potential is already below the (absurd) target: no exploration, no labels
    assert (row.seed, row.labels, row.candidates) == (3, 8, None)
    assert [(n.labels, n.reached) for n in result.labels_to_target] == [(8, True)]
    assert not (tmp_path / "seed_3" / "maxvol" / "candidates_1.xyz").exists()


def test_bad_iterations_is_one_line(tmp_path):
    proc = run_cli("demo", "--workdir", tmp_path, "--iterations", 0)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "--iterations" in proc.stderr


def test_bad_target_is_one_line(tmp_path):
    proc = run_cli("demo", "--workdir", tmp_path, "--target", 0)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "--target" in proc.stderr
