"""The demo's active-learning loop, small: DIRECT initial set → train → MD exploration with γ →
maxvol picks → EMT labels → warm-started retrain → validate on the held-out set."""
from __future__ import annotations

import json

import ase.io
from conftest import run_cli

from pace_worker.commands.demo import DemoRequest, active_learning_demo

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


def test_two_iterations_of_maxvol_learn_from_exploration(tmp_path):
    (tmp_path / "config.yaml").write_text(SMALL_CONFIG)  # the demo keeps a config.yaml it finds
    result = active_learning_demo(DemoRequest(workdir=tmp_path, iterations=2, strategies=("maxvol",), pool_size=60,
                                  initial_labels=8, labels_per_iteration=4, md_steps=60, md_starts=2,
                                  test_structures=30, show_progress=False))
    first, second = result.rows
    assert (first.labels, second.labels) == (8, 12)
    # exploration with the first potential ran MD, measured γ and left candidates
    assert first.candidates > 0 and first.exploration_gamma_max > 0
    candidates = ase.io.read(tmp_path / "maxvol" / "candidates_1.xyz", ":")
    assert len(candidates) == first.candidates
    picks = ase.io.read(tmp_path / "maxvol" / "picks_1.xyz", ":")
    assert len(picks) == 4 and all(a.info["config_type"].startswith("md_") for a in picks)
    # the second potential was warm-started on 12 labels and is better on the held-out test set
    labels = ase.io.read(tmp_path / "maxvol" / "labels_2.xyz", ":")
    assert len(labels) == 12 and all("energy" in a.calc.results for a in labels)
    metrics = json.loads((tmp_path / "maxvol" / "iteration_2" / "train_metrics.json").read_text())
    assert metrics["mode"] == "warm"
    print("test F RMSE:", first.force_rmse_mev_per_A, "->", second.force_rmse_mev_per_A)
    assert second.force_rmse_mev_per_A < first.force_rmse_mev_per_A
    assert len(ase.io.read(result.files["test_set"], ":")) == 30
    summary = json.loads(result.files["summary"].read_text())
    assert [r["labels"] for r in summary["rows"]] == [8, 12]
    assert result.files["learning_curve"].stat().st_size > 10_000


def test_bad_iterations_is_one_line(tmp_path):
    proc = run_cli("demo", "--workdir", tmp_path, "--iterations", 0)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "--iterations" in proc.stderr
