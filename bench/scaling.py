"""Throughput of the scoring stage on 1 and 2 local workers and on a 2-worker Dask cluster.

    .venv/bin/python bench/scaling.py [--n 3000] [--chunk-size 16] [--chunks-per-task 4]

The stage is direct_sample's encoder (per-structure ACE descriptors from pyace B-projections,
:func:`pace_worker.ace.descriptors.features_chunk`) over ``n`` structures of the unlabelled pool of
``bench/direct_scale.py`` (written if missing), through :class:`pace_worker.parallel.executor.ChunkExecutor`
exactly as the commands use it: workers read their own byte ranges of the file. The Dask
cluster is a real ``dask scheduler`` + two ``dask worker --nthreads 1`` processes on 127.0.0.1
(:class:`pace_worker.parallel.dask_cluster.DaskProcesses`), started before the clock starts and stopped
before the local runs (its idle processes would slow them); each Dask task carries
``chunks-per-task`` chunks (meta_config ``dask.chunks_per_task``). The speed of this VM drifts by
up to ~30 % between minutes, so the runs go in rounds (local 1, local 2, a fresh cluster with one
untimed warm-up run, Dask 2) and each ratio is taken within a round. Prints per round and the
median over rounds:

* speed-up 2 local workers / 1 local worker (goal ≥ 1.8),
* Dask overhead: time on the 2-worker Dask cluster / time on 2 local workers (goal ≤ 1.1).

All runs must give identical features (checked).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from pace_worker.config import DaskSettings  # noqa: E402


def run_stage(pool: Path, offsets: list[int], basis: Path, executor) -> tuple[float, np.ndarray]:
    from pace_worker.ace.descriptors import features_chunk, load_basis
    from pace_worker.files.frames import pool_chunks

    start = time.perf_counter()
    blocks = [result.features for _, result in executor.map_chunks(
        features_chunk, pool_chunks(pool, executor.chunk_size, "input", offsets=offsets),
        initializer=load_basis, initargs=(str(basis),), total=len(offsets))]
    return time.perf_counter() - start, np.concatenate(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="structures scored per run")
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--chunks-per-task", type=int, default=DaskSettings().chunks_per_task)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of (local 1, local 2, Dask 2); ratios are taken within a round")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-direct")
    args = parser.parse_args()

    from direct_scale import write_pool

    from pace_worker.ace.descriptors import write_unfitted_basis
    from pace_worker.config import DescriptorSettings
    from pace_worker.files.frames import frame_offsets
    from pace_worker.parallel.dask_cluster import DaskProcesses
    from pace_worker.parallel.executor import ChunkExecutor

    args.workdir.mkdir(parents=True, exist_ok=True)
    pool = args.workdir / "pool_10000.xyz"
    if not pool.is_file():
        write_pool(pool, 10000)
    elements: set = set()
    offsets = frame_offsets(pool, "pool", elements)[:args.n]
    basis = args.workdir / "scaling_basis.yaml"
    write_unfitted_basis(sorted(elements), DescriptorSettings(), basis)

    def timed(executor, name):
        seconds, features[name] = run_stage(pool, offsets, basis, executor)
        return seconds

    features: dict = {}
    rounds = []
    for _ in range(args.rounds):
        times = {f"local {w}": timed(ChunkExecutor(w, args.chunk_size, show_progress=False), f"local {w}")
                 for w in (1, 2)}
        with DaskProcesses(n_workers=2) as cluster:
            dask = ChunkExecutor(chunk_size=args.chunk_size, show_progress=False, scheduler=cluster.address,
                                 chunks_per_task=args.chunks_per_task)
            timed(dask, "dask 2")  # warm-up: the fresh workers import pyace and pace_worker (~1.5 s, once)
            times["dask 2"] = timed(dask, "dask 2")
        rounds.append(times)
        for name, f in features.items():
            assert np.array_equal(f, features["local 1"]), f"{name}: features differ from 1 local worker"

    print(f"\n{args.n} structures, chunk size {args.chunk_size}, {args.chunks_per_task} chunks per Dask task")
    print(f"{'round':>5s} {'local 1 s':>10s} {'local 2 s':>10s} {'dask 2 s':>9s} {'speed-up 2/1':>13s} "
          f"{'Dask/local 2':>13s}")
    speedups, overheads = [], []
    for i, t in enumerate(rounds, 1):
        speedups.append(t["local 1"] / t["local 2"])
        overheads.append(t["dask 2"] / t["local 2"])
        print(f"{i:>5d} {t['local 1']:>10.2f} {t['local 2']:>10.2f} {t['dask 2']:>9.2f} {speedups[-1]:>13.2f} "
              f"{overheads[-1]:>13.2f}")
    median = {name: float(np.median([t[name] for t in rounds])) for name in rounds[0]}
    print("structures/s (median): " + ", ".join(f"{name} {args.n / t:.1f}" for name, t in median.items()))
    print(f"speed-up 2 local workers / 1: median {np.median(speedups):.2f}, range {min(speedups):.2f}-"
          f"{max(speedups):.2f} (goal >= 1.8)")
    print(f"Dask overhead (2-worker cluster / 2 local workers): median {np.median(overheads):.2f}, range "
          f"{min(overheads):.2f}-{max(overheads):.2f} (goal <= 1.1)")
    print("features identical in all runs")


if __name__ == "__main__":
    main()
