"""How much faster a warm-started iteration reaches the previous iteration's error than a cold one.

    .venv/bin/python bench/warm_start.py [--maxiter 60] [--fraction 0.7]

An active-learning step in miniature, on the bundled Si data and the demo config:

1. iteration 1: ``train`` cold on a seeded ``fraction`` of Si_training.xyz → potential P1 with
   final training force RMSE e1;
2. iteration 2: the full Si_training.xyz (the data grew), once cold and once warm
   (``--initial-potential P1``), same settings.

From pacemaker's per-step ``metrics.txt`` it prints, for the cold and the warm iteration 2,
the optimizer steps and seconds until the training force RMSE is ≤ e1 (the previous error),
their ratio, and both final test errors.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent


def train(work: Path, name: str, dataset: Path, config: Path, iteration: int, *extra) -> dict:
    out = work / name
    out.mkdir()
    (out / "meta.yaml").write_text(f"device: cpu\nthreads: {os.cpu_count()}\noutput_dir: {out}\n")
    proc = subprocess.run([sys.executable, str(REPO / "src" / "main.py"), "train", "--config", str(config),
                           "--meta-config", str(out / "meta.yaml"), "--dataset", str(dataset),
                           "--iteration", str(iteration), *map(str, extra)],
                          capture_output=True, text=True, env={**os.environ, "PACE_WORKER_NO_PROGRESS": "1"})
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "train_metrics.json").read_text())
    metrics["_out"] = out
    return metrics


def force_rmse_history(iteration_dir: Path) -> np.ndarray:
    lines = (iteration_dir / "metrics.txt").read_text().splitlines()
    column = lines[0].split().index("rmse_f_comp")
    return np.array([float(line.split()[column]) for line in lines[1:] if line.strip()]) * 1e3


def steps_to_reach(history: np.ndarray, target: float):
    below = np.nonzero(history <= target)[0]
    return int(below[0]) if len(below) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maxiter", type=int, default=60)
    parser.add_argument("--fraction", type=float, default=0.7)
    args = parser.parse_args()

    import ase.io

    work = Path(tempfile.mkdtemp(prefix="warm_start_"))
    full = REPO / "examples/si/data/Si_training.xyz"
    structures = ase.io.read(full, index=":")
    keep = np.sort(np.random.default_rng(0).permutation(len(structures))[:int(args.fraction * len(structures))])
    part = work / "Si_part.xyz"
    ase.io.write(part, [structures[i] for i in keep], format="extxyz")
    config = yaml.safe_load((REPO / "examples/si/config.yaml").read_text())
    config["fit"]["maxiter"] = args.maxiter
    config["data"]["test_filename"] = str(REPO / "examples/si/data/Si_test.xyz")
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))

    it1 = train(work, "iter1", part, cfg, 1)
    e1 = it1["train"]["force_rmse_mev_per_A"]
    cold = train(work, "iter2_cold", full, cfg, 2)
    warm = train(work, "iter2_warm", full, cfg, 2, "--initial-potential", it1["_out"] / "output_potential.yaml")

    rows = {}
    for name, m in (("cold", cold), ("warm", warm)):
        history = force_rmse_history(Path(m["iteration_dir"]))
        steps = steps_to_reach(history, e1)
        per_step = m["fit"]["wall_time_s"] / max(len(history), 1)
        rows[name] = {"steps_to_previous_error": steps,
                      "seconds_to_previous_error": None if steps is None else steps * per_step,
                      "initial_force_rmse": float(history[0]), "final_force_rmse": float(history[-1]),
                      "test_force_rmse": m["test"]["force_rmse_mev_per_A"],
                      "test_energy_rmse": m["test"]["energy_rmse_mev_per_atom"], "fit_wall_s": m["fit"]["wall_time_s"]}
    print(f"iteration 1 (cold, {len(keep)} structures): train force RMSE e1 = {e1:.1f} meV/A, "
          f"test {it1['test']['force_rmse_mev_per_A']:.1f} meV/A")
    print(f"{'iteration 2':12s} {'F0 meV/A':>9s} {'steps to e1':>12s} {'s to e1':>8s} {'final F':>8s} "
          f"{'test F':>7s} {'test E':>7s}")
    for name, r in rows.items():
        steps = "never" if r["steps_to_previous_error"] is None else str(r["steps_to_previous_error"])
        secs = "-" if r["seconds_to_previous_error"] is None else f"{r['seconds_to_previous_error']:.0f}"
        print(f"{name:12s} {r['initial_force_rmse']:9.1f} {steps:>12s} {secs:>8s} {r['final_force_rmse']:8.1f} "
              f"{r['test_force_rmse']:7.1f} {r['test_energy_rmse']:7.2f}")
    c, w = rows["cold"]["steps_to_previous_error"], rows["warm"]["steps_to_previous_error"]
    if w == 0:
        print(f"the warm start is at the previous error from its first step; the cold start needs "
              f"{'more than maxiter' if c is None else c} steps")
    elif w is not None:
        ratio = "cold never reached it" if c is None else f"{c / w:.1f}x fewer steps"
        print(f"warm start reaches the previous error after {w} steps vs {c} cold: {ratio}")
    print(json.dumps({"e1": e1, "maxiter": args.maxiter, "fraction": args.fraction, **rows}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
