"""``pace-worker direct_sample`` on unlabelled pools of 1k / 10k / 100k structures.

    .venv/bin/python bench/direct_scale.py [--sizes 1000 10000 100000] [--fraction 0.01]

Pools: Cu structures of seven families in turn (fcc, bcc and hcp 32-atom cells, fcc with a
vacancy, Cu/Al fcc alloys, fcc(111) slabs, 13-atom icosahedral clusters; random strain ±3 %,
rattle 0.05 Å; seeded; :func:`pace_worker.toy_data.unlabelled_pool`), written once to
``runs/bench-direct/`` and reused. For each size it runs the command with
``--n_clusters = fraction × size`` and prints wall time, peak memory (PSS and plain RSS summed
over the process tree) and the coverage score of the DIRECT picks and of a seeded random
subset of the same size (from the command's report), and how many picks each family got
(structure i of a pool belongs to family i mod 7).

Goals: 100k structures in ≤ 10 min and < 4 GB on 2 cores; coverage ≥ random + 0.1 at 1 %.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from measure import run_measured  # noqa: E402

from pace_worker.files.atomic_io import companion_path  # noqa: E402


def write_pool(path: Path, n: int, seed: int = 0, block: int = 5000) -> None:
    """Write ``n`` structures in blocks (memory stays small), through a temporary name."""
    import ase.io

    from pace_worker.toy_data import FAMILIES, unlabelled_pool

    tmp = path.with_suffix(".part")
    with open(tmp, "w") as f:
        for start in range(0, n, block):
            # rotate the family order so every block continues the same cycle
            count = min(block, n - start)
            shift = start % len(FAMILIES)
            families = FAMILIES[shift:] + FAMILIES[:shift]
            ase.io.write(f, unlabelled_pool(count, families=families, seed=seed + start), format="extxyz")
    tmp.rename(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--fraction", type=float, default=0.01, help="clusters (= picks) per pool structure")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-direct")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    rows = []
    for n in args.sizes:
        pool = args.workdir / f"pool_{n}.xyz"
        if not pool.is_file():
            print(f"writing {pool} ...", flush=True)
            write_pool(pool, n)
        n_clusters = max(1, round(args.fraction * n))
        out = args.workdir / f"direct_{n}.xyz"
        wall, pss, rss, _ = run_measured([sys.executable, str(REPO / "src" / "main.py"), "direct_sample",
                                          "--input", str(pool), "--output", str(out),
                                          "--n_clusters", str(n_clusters)], args.workdir)
        report = json.loads(companion_path(out, "_report.json").read_text())
        cov, t = report["coverage"], report["timing"]
        from pace_worker.toy_data import FAMILIES

        per_family = {f: 0 for f in FAMILIES}
        for p in report["picks"]:
            per_family[FAMILIES[p["pool_index"] % len(FAMILIES)]] += 1
        print(f"{n}: picks per family {per_family}", flush=True)
        rows.append((n, n_clusters, wall, pss, rss, cov["direct"], cov["random"], report["pca"]["n_components"], t))
        print(f"{n}: {wall:.1f} s, PSS {pss:.0f} MiB, coverage {cov['direct']:.3f} vs random {cov['random']:.3f} "
              f"(stages: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + ")", flush=True)

    print(f"\n{'pool':>8s} {'picks':>6s} {'wall s':>8s} {'PSS MiB':>8s} {'RSS-sum MiB':>11s} "
          f"{'PCs':>4s} {'coverage DIRECT':>15s} {'random':>7s} {'diff':>6s}")
    for n, k, wall, pss, rss, cd, cr, pcs, _ in rows:
        print(f"{n:>8d} {k:>6d} {wall:>8.1f} {pss:>8.0f} {rss:>11.0f} {pcs:>4d} {cd:>15.3f} {cr:>7.3f} "
              f"{cd - cr:>+6.3f}")
    print("goals: 100k in <= 600 s and < 4096 MiB; coverage >= random + 0.1")


if __name__ == "__main__":
    main()
