"""Is a potential trained on DIRECT's picks better than one trained on random picks?

    .venv/bin/python bench/direct_downstream.py [--seeds 0 1 2] [--picks 30] [--pool 1000]
                                                [--functions 32] [--maxiter 400] [--repulsion none]

DIRECT's claim (Qi et al. 2024) is that a model trained on its picks extrapolates better. Judged as
a user would: for each seed, a raw pool shaped like an MD-made one (one near-equilibrium bulk
family ≥ 60 %, rare families ≤ 3 % each; two elements; single- and multi-element families:
bulk phases, a vacancy, a surface, a cluster, an alloy), ``m`` picks by ``direct_sample`` and
``m`` uniform random picks, both labelled with EMT, each used to ``train`` the same small basis
(same config, same seed), each potential ``validate``-d on held-out structures of every family
(8 per family, drawn apart from the pool). Printed: force RMSE per family and the worst family,
per seed and as the median over seeds, and the ratio DIRECT / random of the worst family.

Everything goes through the command line, as a user runs it. Fits are not bit-reproducible across
machines (TF/BLAS): the numbers are one machine's.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

# (family, element, share of the pool): MD-made pools are mostly near-equilibrium bulk
FAMILIES = [("fcc", "Cu", 0.62), ("vacancy", "Cu", 0.10), ("alloy", "Cu", 0.10), ("fcc_Al", "Al", 0.09),
            ("hcp", "Cu", 0.03), ("slab", "Cu", 0.03), ("cluster", "Cu", 0.03)]
REPULSION = ["null"]
FIT = {"FUNCTIONS": "32", "MAXITER": "400"}
CONFIG = """\
seed: 1
cutoff: 5.0
data: {test_size: 0}
potential:
  elements: [Al, Cu]
  functions:
    number_of_functions_per_element: FUNCTIONS
    ALL: {nradmax_by_orders: [8, 3, 2], lmax_by_orders: [0, 2, 1]}
fit: {maxiter: MAXITER, repulsion: REPULSION}
backend: {batch_size: 50, display_step: 50}
"""


def structure(family: str, element: str, rng):
    from pace_worker.toy_data import family_structure

    name = "fcc" if family == "fcc_Al" else family
    atoms = family_structure(name, rng, element=element, strain=0.03, rattle=0.06)
    atoms.info["config_type"] = family
    return atoms


def make_pool(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    counts = [max(1, int(round(share * n))) for _, _, share in FAMILIES]
    pool = [structure(f, el, rng) for (f, el, _), c in zip(FAMILIES, counts) for _ in range(c)]
    return [pool[i] for i in rng.permutation(len(pool))]


def make_test_set(seed: int, per_family: int = 8) -> list:
    from pace_worker.toy_data import label_with_emt

    rng = np.random.default_rng(10_000 + seed)
    return label_with_emt([structure(f, el, rng) for f, el, _ in FAMILIES for _ in range(per_family)])


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "src" / "main.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env={**__import__("os").environ,
                                                               "PACE_WORKER_NO_PROGRESS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {proc.stderr[-2000:]}")
    return proc


def train_and_validate(folder: Path, picks: list, test_path: Path) -> dict:
    import ase.io

    from pace_worker.toy_data import label_with_emt

    folder.mkdir(parents=True, exist_ok=True)
    ase.io.write(str(folder / "train.xyz"), label_with_emt(picks), format="extxyz")
    config = CONFIG.replace("REPULSION", REPULSION[0])
    for key, value in FIT.items():
        config = config.replace(key, value)
    (folder / "config.yaml").write_text(config)
    (folder / "meta.yaml").write_text("device: cpu\nthreads: 2\nlog_level: WARNING\n")
    cli("train", "--config", folder / "config.yaml", "--meta-config", folder / "meta.yaml",
        "--dataset", folder / "train.xyz", "--iteration", 1, cwd=folder)
    cli("validate", "--potential", folder / "output_potential.yace", "--test-set", test_path,
        "--output", folder / "validation.json", "--no-plots", cwd=folder)
    metrics = json.loads((folder / "validation.json").read_text())
    return {g: v["force_rmse_mev_per_A"] for g, v in metrics["per_group"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--picks", type=int, default=30)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-direct-downstream")
    parser.add_argument("--repulsion", choices=["auto", "none"], default="none",
                        help="pacemaker's core repulsion: 'auto' puts ZBL below the shortest distance of the "
                             "training picks, which then dominates every test structure with a closer pair "
                             "(thousands of meV/Å, whichever selection); 'none' (default) measures what the "
                             "picks teach the ACE part")
    parser.add_argument("--functions", type=int, default=32, help="basis functions per element of every fit")
    parser.add_argument("--maxiter", type=int, default=400, help="BFGS steps of every fit")
    args = parser.parse_args()
    REPULSION[0] = "auto" if args.repulsion == "auto" else "null"
    FIT.update(FUNCTIONS=str(args.functions), MAXITER=str(args.maxiter))
    args.workdir = args.workdir / f"repulsion-{args.repulsion}-f{args.functions}-i{args.maxiter}"
    import ase.io

    results = {"direct": [], "random": []}
    for seed in args.seeds:
        t0 = time.perf_counter()
        root = args.workdir / f"seed{seed}"
        root.mkdir(parents=True, exist_ok=True)
        pool = make_pool(args.pool, seed)
        ase.io.write(str(root / "pool.xyz"), pool, format="extxyz")
        ase.io.write(str(root / "test.xyz"), make_test_set(seed), format="extxyz")
        cli("direct_sample", "--input", root / "pool.xyz", "--output", root / "direct_picks.xyz",
            "--n_clusters", args.picks, "--seed", seed, cwd=root)
        direct_picks = ase.io.read(str(root / "direct_picks.xyz"), ":")
        rng = np.random.default_rng(seed)
        random_picks = [pool[i] for i in rng.choice(len(pool), size=args.picks, replace=False)]
        for method, picks in (("direct", direct_picks), ("random", random_picks)):
            per_family = train_and_validate(root / method, picks, root / "test.xyz")
            shares = {f: sum(a.info["config_type"] == f for a in picks) for f, _, _ in FAMILIES}
            results[method].append(per_family)
            worst = max(per_family, key=per_family.get)
            print(f"seed {seed} {method:6s}: picks per family {shares}; worst family {worst} "
                  f"{per_family[worst]:.0f} meV/Å", flush=True)
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)

    families = [f for f, _, _ in FAMILIES]
    print(f"\nforce RMSE on held-out structures, meV/Å (median over seeds {args.seeds}; {args.picks} picks of "
          f"{args.pool}; {args.functions} functions per element, {args.maxiter} BFGS steps; core repulsion "
          f"{args.repulsion})")
    print(f"{'family':10s} {'share':>6s} {'DIRECT':>9s} {'random':>9s}")
    for f, _, share in FAMILIES:
        d = np.median([r[f] for r in results["direct"]])
        r = np.median([r[f] for r in results["random"]])
        print(f"{f:10s} {100 * share:5.0f}% {d:9.0f} {r:9.0f}")
    worst = {m: [max(r[f] for f in families) for r in results[m]] for m in results}
    ratios = [d / r for d, r in zip(worst["direct"], worst["random"])]
    print(f"{'worst':10s} {'':6s} {np.median(worst['direct']):9.0f} {np.median(worst['random']):9.0f}")
    print(f"worst-family ratio DIRECT / random per seed: {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"median of worst DIRECT / median of worst random: "
          f"{np.median(worst['direct']) / np.median(worst['random']):.2f} (goal ≤ 0.5)")


if __name__ == "__main__":
    main()
