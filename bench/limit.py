"""How close ``sample``, ``direct_sample`` and ``validate`` come to the limit: pyace's own work ÷ cores.

    .venv/bin/python bench/limit.py [--sizes 20000 100000] [--validate-sizes 20000] [--potential P.yaml] [--repeats K]

The limit is measured in the same run, on the same pool, on this machine: per structure, the work
pyace itself does on atoms already in memory — its neighbour environment
(``PyACECalculator.get_atomic_env``) and ``ACECalculator.compute`` with the B-projections read out
(``sample``, and ``direct_sample`` given the same potential as its descriptor basis) or energy and
forces read out (``validate``, from the ``.yace``, by the evaluator ``validate`` uses: pyace's
recursive one; the limit with ``PyACECalculator``'s default product evaluator is printed beside it)
— timed over ``--probe`` structures, best of three passes, just before and just after each command
(their mean: this VM's pace drifts within minutes, and a single probe before the commands was up to
~15 % off the pace they met), × structures ÷ cores.
Nothing else is in it: no parsing, no selection, no writing, no Python start-up. The commands run
as the orchestrator runs them (``python src/main.py …``, all cores as workers, no progress bars,
no plots), timed without memory polling; ``sample`` runs once more with polling for its peak
memory (PSS summed over its processes, :func:`measure.run_measured`).

Prints per pool size the limit, the command's wall time and their ratio, and beside them how much slower
pyace's own loop runs when a copy runs on every core at once (the limit assumes it does not) and the
wall time's ratio to the limit at that pace (``wall/(limit x busy)``: on this VM the pace of two busy
cores moves between runs more than the commands do, so this ratio is the steadier of the two when
comparing runs; the goals are on ``wall/limit``). It also prints a floor that no command reading the
pool's text on this stack can go under (:func:`floor_seconds`): a Python process importing pyace's
compiled modules (timed here, best of three; pyace's work can start only after it; importing all of
pyace, ``import pyace``, costs ~10× more, and the commands do not) plus the work of all cores after it —
pyace's per structure, and libAtoms' C parser reading each frame into its dictionaries (no ASE
``Atoms``, no checks) less what the other cores could parse during the import. Where the floor's ratio
to the limit is above a goal, a program that reads the pool with Python and calls pyace as the limit
does cannot meet the goal on this machine (feeding pyace its environments more cheaply saves a few per
cent: the commands build them from species indices, ~4 % of pyace's work here); below it, the gap is all
that is left for everything else (building ``Atoms``, checks, selection, metrics, writing).
Beside each command it prints what its workers cost per structure against the limit's loop on one core
(``bench/worker_overhead.py``: chunk after chunk in turn in this process, on the first pool's first
``--probe`` frames; steady to about ±5 % on this VM where single command runs move by ±15 %): the part
of ``wall/limit`` that reading, checking and sending back each structure causes, whatever the VM's pace;
and beside it the least worker's (``worker_overhead.least_loop``: the text parsed by the C parser into its
dictionaries, pyace's environment and ``compute``, nothing else), what any worker reading the text with
Python pays at the least per structure against the limit's loop.
The goals (issue 24): ``sample`` ≤ 1.3× its limit at 20k and 100k; ``direct_sample`` at 100k ≤ 1.3×;
``validate`` throughput ≥ 0.9× the limit's (i.e. wall ≤ 1.11× the limit); ``sample``'s peak memory at 100k
≤ 1.2× its 20k figure. Without ``--potential`` a Si potential of the bundled example's basis (40
functions per element, body order 4) is fitted for 5 BFGS steps first (~1 min; the fit's quality does not matter
here, only the basis's cost). Pools: 32-atom diamond-Si cells, strained and rattled (seeded, as
``bench/sample_vs_pace_select.py``); the validate set carries zero forces and a constant energy
per atom as labels (the errors do not matter here either). One machine's numbers: the ratios move
with the machine's load and speed drift (this VM: up to ~15 % between minutes, ±40 % on some days);
``--repeats K`` runs each command K times, each run between two probes of the pace (the probe after
one run is the probe before the next), and prints every run's ratio and their median, the figure to
judge a goal by where single runs scatter.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MAIN = REPO / "src" / "main.py"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from measure import MEMORY_RUN_POLL_S, run_measured  # noqa: E402
from sample_vs_pace_select import make_pool  # noqa: E402
from worker_overhead import pyace_loop, worker_pyace_least_seconds  # noqa: E402

QUICK_CONFIG = """\
seed: 42
cutoff: 5.0
data: {test_size: 0.1, reference_energy: auto}
potential:
  functions:
    number_of_functions_per_element: 40
    ALL: {nradmax_by_orders: [8, 4, 3], lmax_by_orders: [0, 3, 2]}
fit: {optimizer: BFGS, maxiter: 5}
backend: {evaluator: tensorpot, batch_size: 100, display_step: 50}
train: {schedule: "off"}
"""


def cli(*args) -> list[str]:
    return [sys.executable, str(MAIN), *map(str, args)]


def quick_potential(work: Path) -> Path:
    """A Si potential of the bundled example's basis after 5 BFGS steps: (.yaml with .asi and .yace beside it)."""
    (work / "config.yaml").write_text(QUICK_CONFIG)
    (work / "meta.yaml").write_text("device: cpu\n")
    dataset = work / "Si_training.xyz"
    dataset.write_bytes((REPO / "examples/si/data/Si_training.xyz").read_bytes())
    wall, _, _, _ = run_measured(cli("train", "--config", work / "config.yaml", "--meta-config", work / "meta.yaml",
                                     "--dataset", dataset, "--iteration", 1), work, memory=False)
    print(f"fitted the bench's potential in {wall:.0f} s")
    return work / "output_potential.yaml"


def write_pool(path: Path, n: int, labelled: bool) -> list:
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    pool = make_pool(n)
    if labelled:
        for atoms in pool:
            atoms.calc = SinglePointCalculator(atoms, energy=-5.4 * len(atoms), forces=np.zeros((len(atoms), 3)))
    ase.io.write(path, pool, format="extxyz")
    return pool


def pyace_seconds_per_structure(potential: Path, structures: list, projections: bool,
                                default_evaluator: bool = False) -> float:
    """pyace's own work per structure on atoms in memory (:func:`worker_overhead.pyace_loop`; best of
    three passes)."""
    run = pyace_loop(potential, projections, default_evaluator)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run(structures)
        best = min(best, time.perf_counter() - start)
    return best / len(structures)


def python_with_pyace_seconds(code: str = "from pace_worker.stack import import_pyace_core; import_pyace_core()") \
        -> float:
    """What every program on this stack pays before any work: a Python process that imports pyace's
    compiled modules (basis, evaluator, calculator, atomic environment; NumPy with them), best of
    three. ``code="import pyace"``: all of pyace (its Python layer imports ASE's ``io``, pandas, SciPy)."""
    best = float("inf")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)
        best = min(best, time.perf_counter() - start)
    return best


def c_parse_seconds_per_structure(path: Path, count: int) -> float:
    """libAtoms' C parser reading the first ``count`` frames of ``path`` into its dictionaries (no
    ASE ``Atoms``, no checks): the least any reader of the text pays (best of three)."""
    from extxyz import cextxyz

    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        fp = cextxyz.cfopen(str(path), "r")
        try:
            for _ in range(count):
                cextxyz.read_frame_dicts(fp)
        finally:
            cextxyz.cfclose(fp)
        best = min(best, time.perf_counter() - start)
    return best / count


def floor_seconds(start_up: float, parse: float, pyace: float, structures: int, cores: int) -> float:
    """The least wall time of reading ``structures`` frames (``parse`` s each) and doing pyace's work
    on them (``pyace`` s each) on ``cores`` cores, pyace usable only after a ``start_up`` s import:
    during the import the other cores parse at most ``(cores - 1) × start_up`` s of frames."""
    parse_left = max(0.0, parse * structures - (cores - 1) * start_up)
    return start_up + (pyace * structures + parse_left) / cores


def limit_row(command: str, size: int, cores: int, wall: float, before: float, after: float, busy: float,
              start_up: float, parse: float) -> tuple:
    """A row of the table: the limit and the floor at the mean of pyace's pace per structure probed
    just ``before`` and ``after`` the command (s; this VM's pace drifts within minutes, so one probe
    timed before a run of ~10 s to a minute can be several per cent off the pace the command met)."""
    per = (before + after) / 2
    return (command, size, per * 1e3, per * size / cores, wall, busy, floor_seconds(start_up, parse, per, size, cores),
            before * 1e3, after * 1e3)


def probed_runs(command: list, work: Path, probe, repeats: int, before: Optional[float] = None) \
        -> list[tuple[float, float, float]]:
    """``(wall, pace before, pace after)`` of ``repeats`` runs of ``command`` (no memory polling),
    pyace's pace per structure probed (``probe()``) around each run; the probe after a run is the one
    before the next. ``before``: a probe just taken (else one is taken first)."""
    runs = []
    before = probe() if before is None else before
    for _ in range(repeats):
        wall, _, _, _ = run_measured(command, work, memory=False)
        after = probe()
        runs.append((wall, before, after))
        before = after
    return runs


def ratios_per_command_and_pool(rows: list) -> dict:
    """``{(command, pool): [wall/limit of each run]}`` of the table's rows."""
    ratios: dict = {}
    for command, size, _, limit, wall, *_ in rows:
        ratios.setdefault((command, size), []).append(wall / limit)
    return ratios


def _timed_in_child(args) -> float:
    return pyace_seconds_per_structure(*args)


def pyace_seconds_all_cores(potential: Path, structures: list, projections: bool, cores: int) -> float:
    """The same per-structure time with ``cores`` copies of the loop running at once (mean of
    theirs): what pyace itself keeps up when every core is busy (shared caches, memory bandwidth,
    hyper-threads). Reported beside the limit, which assumes perfect scaling."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(cores) as pool:
        return float(np.mean(pool.map(_timed_in_child, [(potential, structures, projections)] * cores)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[20000, 100000], help="pool sizes for sample/direct")
    parser.add_argument("--validate-sizes", type=int, nargs="*", default=[20000])
    parser.add_argument("--potential", type=Path, default=None, help="B-basis .yaml with its .asi and .yace beside it")
    parser.add_argument("--probe", type=int, default=1000, help="structures the limit is timed on")
    parser.add_argument("--n", type=int, default=50, help="structures sample picks")
    parser.add_argument("--n-clusters", type=int, default=500, help="clusters of direct_sample")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each command (their median ratio is printed)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows, memory, overhead, least_overhead, product = [], {}, {}, {}, {}
    start_up = python_with_pyace_seconds()
    whole_pyace = python_with_pyace_seconds("import pyace")
    with tempfile.TemporaryDirectory(prefix="pace-limit-") as tmp:
        work = Path(tmp)
        potential = args.potential.resolve() if args.potential else quick_potential(work)
        yace_only = work / "yace_only"  # validate without an active set: energy and forces, no γ
        yace_only.mkdir()
        (yace_only / "p.yace").write_bytes(potential.with_suffix(".yace").read_bytes())
        (work / "meta_run.yaml").write_text(f"device: cpu\nworkers: {cores}\n")
        for size in sorted(set(args.sizes) | set(args.validate_sizes)):
            run_direct = size in args.sizes
            pool_path = work / f"pool_{size}.xyz"
            pool = write_pool(pool_path, size, labelled=False) if run_direct else None
            if run_direct:
                probed = pool[:args.probe]
                del pool
                before = pyace_seconds_per_structure(potential, probed, projections=True)
                busy = pyace_seconds_all_cores(potential, probed, True, cores) / before
                parse = c_parse_seconds_per_structure(pool_path, args.probe)
                for command in ("sample", "direct_sample"):
                    if command not in overhead:
                        ours, pyace, least = worker_pyace_least_seconds(command, potential, pool_path, args.probe)
                        overhead[command], least_overhead[command] = ours / pyace, least / pyace
                common = ("--config", work / "config_run.yaml", "--meta-config", work / "meta_run.yaml")
                (work / "config_run.yaml").write_text("sample: {}\n")

                def probe():
                    return pyace_seconds_per_structure(potential, probed, projections=True)
                for wall, before, after in probed_runs(
                        cli("sample", *common, "--candidates", pool_path, "--n_samples", args.n, "--output",
                            work / f"sel_{size}.xyz", "--potential", potential, "--no-progress"),
                        work, probe, args.repeats, before):
                    rows.append(limit_row("sample", size, cores, wall, before, after, busy, start_up, parse))
                _, pss, rss, _ = run_measured(cli("sample", *common, "--candidates", pool_path, "--n_samples", args.n,
                                                  "--output", work / f"selm_{size}.xyz", "--potential", potential,
                                                  "--no-progress"), work, memory=True, poll_s=MEMORY_RUN_POLL_S)
                memory[size] = (pss, rss)
                for wall, before, after in probed_runs(  # its first probe after the memory run
                        cli("direct_sample", *common, "--input", pool_path, "--output", work / f"div_{size}.xyz",
                            "--n_clusters", args.n_clusters, "--potential", potential, "--no-plots", "--no-progress"),
                        work, probe, args.repeats):
                    rows.append(limit_row("direct_sample", size, cores, wall, before, after, busy, start_up, parse))
                del probed
                pool_path.unlink()
            if size in args.validate_sizes:
                test_path = work / f"test_{size}.xyz"
                labelled = write_pool(test_path, size, labelled=True)
                probed = labelled[:args.probe]
                del labelled
                product_before = pyace_seconds_per_structure(yace_only / "p.yace", probed, False, True)
                before = pyace_seconds_per_structure(yace_only / "p.yace", probed, projections=False)
                busy = pyace_seconds_all_cores(yace_only / "p.yace", probed, False, cores) / before
                parse = c_parse_seconds_per_structure(test_path, args.probe)
                if "validate" not in overhead:
                    ours, pyace, least = worker_pyace_least_seconds("validate", yace_only / "p.yace", test_path,
                                                                    args.probe)
                    overhead["validate"], least_overhead["validate"] = ours / pyace, least / pyace
                def probe():
                    return pyace_seconds_per_structure(yace_only / "p.yace", probed, projections=False)
                runs = probed_runs(cli("validate", "--meta-config", work / "meta_run.yaml", "--potential",
                                       yace_only / "p.yace", "--test-set", test_path, "--output",
                                       work / f"m_{size}.json", "--no-plots", "--no-progress"),
                                   work, probe, args.repeats, before)
                product_after = pyace_seconds_per_structure(yace_only / "p.yace", probed, False, True)
                for wall, before, after in runs:
                    rows.append(limit_row("validate", size, cores, wall, before, after, busy, start_up, parse))
                product[size] = ((product_before + product_after) / 2 * size / cores, runs[0][0])  # around all runs
                del probed
                test_path.unlink()
    print(f"\n{cores} cores; limit = pyace's work per structure (atoms in memory) × structures ÷ cores")
    print(f"floor = Python importing pyace's compiled modules ({start_up:.2f} s; all of pyace: {whole_pyace:.2f} s) "
          "+ (pyace + C parse) per structure × structures ÷ cores (less what the other cores parse during the import)")
    print(f"{'command':14s} {'pool':>7s} {'pyace ms/str (before-after)':>27s} {'limit s':>8s} {'floor/limit':>11s} "
          f"{'wall s':>8s} {'wall/limit':>10s}  {'goal':29s} pyace, all cores busy  wall/(limit x busy)  "
          "worker/pyace (1 core)  least worker/pyace")
    goals = {"sample": "<= 1.3", "direct_sample": "<= 1.3", "validate": "<= 1.11 (throughput >= 0.9x)"}
    for command, size, per_ms, limit, wall, busy, floor, before_ms, after_ms in rows:
        pace = f"{per_ms:.3f} ({before_ms:.3f}-{after_ms:.3f})"
        print(f"{command:14s} {size:>7d} {pace:>27s} {limit:>8.1f} {floor / limit:>11.2f} {wall:>8.1f} "
              f"{wall / limit:>10.2f}  {goals[command]:29s} {busy:.2f}x its time alone     "
              f"{wall / (limit * busy):.2f}                 {overhead[command]:.2f}                   "
              f"{least_overhead[command]:.2f}")
    ratios = ratios_per_command_and_pool(rows)
    if args.repeats > 1:
        for (command, size), values in ratios.items():
            print(f"{command:14s} {size:>7d} wall/limit over {len(values)} runs: median {np.median(values):.2f} "
                  f"(runs: {', '.join(f'{v:.2f}' for v in values)}; goal {goals[command]})")
    for size, (limit, wall) in sorted(product.items()):
        print(f"validate {size}: the limit with PyACECalculator's default (product) evaluator of the .yace "
              f"(probed before the first run and after the last), which validate no longer uses: {limit:.1f} s, "
              f"the first run's wall/that {wall / limit:.2f}")
    if len(memory) > 1:
        small, large = min(memory), max(memory)
        print(f"sample peak memory (PSS, MiB): {small}: {memory[small][0]:.0f}, {large}: {memory[large][0]:.0f}, "
              f"ratio {memory[large][0] / memory[small][0]:.2f} (goal <= 1.2)")
    print(json.dumps({"cores": cores, "repeats": args.repeats, "python_with_pyace_core_s": start_up,
                      "python_with_all_of_pyace_s": whole_pyace,
                      "rows": [dict(zip(("command", "pool", "pyace_ms_per_structure", "limit_s", "wall_s",
                                         "pyace_all_cores_busy_ratio", "floor_s", "pyace_ms_before",
                                         "pyace_ms_after"), r)) for r in rows],
                      "median_wall_over_limit": {f"{c} {n}": float(np.median(v)) for (c, n), v in ratios.items()},
                      "sample_peak_pss_mib": {str(k): v[0] for k, v in memory.items()},
                      "worker_over_pyace_one_core": overhead,
                      "least_worker_over_pyace_one_core": least_overhead,
                      "validate_limit_with_product_evaluator_s": {str(k): v[0] for k, v in product.items()}}))


if __name__ == "__main__":
    main()
