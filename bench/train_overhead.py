"""Wall-time overhead of ``pace-worker train`` over raw ``pacemaker`` on the same data and settings.

    .venv/bin/python bench/train_overhead.py [--maxiter 60] [--dataset D --config C]

1. ``pace-worker train`` runs on the dataset (default: the bundled Si example) and writes its
   pacemaker folder (``input.yaml``, ``train.pckl.gzip``, ``test.pckl.gzip``).
2. Raw ``pacemaker input.yaml`` runs on exactly those files in a fresh folder, then the two
   tools a pacemaker user needs to get what ``train`` gives (``pace_yaml2yace``,
   ``pace_activeset``), each timed.

Prints the ratios ours / raw pacemaker (goal ≤ 1.05) and ours / (pacemaker + yaml2yace +
activeset), and both runs' test RMSEs (must agree). The order of the two runs alternates
with ``--repeats``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(cmd, cwd, env=None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PACE_WORKER_NO_PROGRESS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                               **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}")
    return time.perf_counter() - start


def test_rmse(pred_file: Path) -> tuple[float, float]:
    sys.path.insert(0, str(REPO / "src"))
    from pace_worker.ace.pacemaker_metrics import errors_from_prediction_file

    m = errors_from_prediction_file(pred_file)
    return m["energy_rmse_mev_per_atom"], m["force_rmse_mev_per_A"]


def ours(work: Path, dataset: Path, config: Path, iteration: int) -> tuple[float, Path]:
    out = work / f"ours_{iteration}"
    out.mkdir()
    meta = out / "meta.yaml"
    meta.write_text(f"device: cpu\nthreads: {os.cpu_count()}\noutput_dir: {out}\n")
    t = run([sys.executable, str(REPO / "src" / "main.py"), "train", "--config", str(config), "--meta-config",
             str(meta), "--dataset", str(dataset), "--iteration", str(iteration)], cwd=work)
    return t, out / "iterations" / f"iter_{iteration:03d}"


def without_our_callback(input_yaml: Path) -> None:
    """Raw pacemaker runs without pace-worker's step callback (its whole interim copy and budget)."""
    import yaml

    sys.path.insert(0, str(REPO / "src"))
    from pace_worker.ace.pacemaker_child import STEP_CALLBACK

    settings = yaml.safe_load(input_yaml.read_text())
    callbacks = [c for c in settings["fit"].pop("callbacks", None) or [] if c != STEP_CALLBACK]
    if callbacks:
        settings["fit"]["callbacks"] = callbacks
    input_yaml.write_text(yaml.safe_dump(settings, sort_keys=False))


def raw(work: Path, template: Path, tag: str) -> tuple[dict, Path]:
    folder = work / f"raw_{tag}"
    folder.mkdir()
    for name in ("input.yaml", "train.pckl.gzip", "test.pckl.gzip"):
        if (template / name).exists():
            shutil.copy(template / name, folder / name)
    without_our_callback(folder / "input.yaml")
    env = {"OMP_NUM_THREADS": str(os.cpu_count())}
    times = {"pacemaker": run([str(BIN / "pacemaker"), "input.yaml"], cwd=folder, env=env)}
    times["pace_yaml2yace"] = run([str(BIN / "pace_yaml2yace"), "output_potential.yaml"], cwd=folder)
    times["pace_activeset"] = run([str(BIN / "pace_activeset"), "output_potential.yaml", "-d", "train.pckl.gzip",
                                   "--all-atoms"], cwd=folder)
    return times, folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO / "examples/si/data/Si_training.xyz")
    parser.add_argument("--config", type=Path, default=REPO / "examples/si/config.yaml")
    parser.add_argument("--maxiter", type=int, default=60, help="optimizer steps (overrides the config)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="train_overhead_"))
    config = yaml.safe_load(args.config.read_text())
    config.setdefault("fit", {})["maxiter"] = args.maxiter
    test_file = config.get("data", {}).get("test_filename")
    if test_file and not Path(test_file).is_absolute():
        config["data"]["test_filename"] = str((args.config.parent / test_file).resolve())
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))

    ours_times, raw_times = [], []
    for r in range(args.repeats):
        if r % 2 == 0:
            t, folder = ours(work, args.dataset, cfg, r + 1)
            times, raw_folder = raw(work, folder, str(r))
        else:  # raw first, on the pacemaker files of the previous run of ours
            times, raw_folder = raw(work, folder, str(r))
            t, folder = ours(work, args.dataset, cfg, r + 1)
        ours_times.append(t)
        raw_times.append(times)

    t_ours = min(ours_times)
    t_pm = min(t["pacemaker"] for t in raw_times)
    t_all = min(sum(t.values()) for t in raw_times)
    e_ours, f_ours = test_rmse(folder / "test_pred.pckl.gzip")
    e_raw, f_raw = test_rmse(raw_folder / "test_pred.pckl.gzip")
    result = {
        "dataset": str(args.dataset), "maxiter": args.maxiter, "repeats": args.repeats, "cpus": os.cpu_count(),
        "wall_s": {"pace_worker_train": t_ours, "pacemaker": t_pm, "pacemaker+yaml2yace+activeset": t_all},
        "ratio_ours_over_pacemaker": t_ours / t_pm,
        "ratio_ours_over_three_tools": t_ours / t_all,
        "test_rmse": {"ours": {"energy_mev_per_atom": e_ours, "force_mev_per_A": f_ours},
                      "raw": {"energy_mev_per_atom": e_raw, "force_mev_per_A": f_raw}},
    }
    print(f"pace-worker train             {t_ours:8.1f} s")
    print(f"raw pacemaker                 {t_pm:8.1f} s   ratio ours/raw      {t_ours / t_pm:.3f}  (goal <= 1.05)")
    print(f"pacemaker+yaml2yace+activeset {t_all:8.1f} s   ratio ours/3 tools  {t_ours / t_all:.3f}")
    print(f"test RMSE ours  E {e_ours:.3f} meV/atom  F {f_ours:.2f} meV/A")
    print(f"test RMSE raw   E {e_raw:.3f} meV/atom  F {f_raw:.2f} meV/A")
    print(json.dumps(result))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
