"""Throughput of the scoring stage on 1 and 2 local workers and on a 2-worker Dask cluster.

    .venv/bin/python bench/scaling.py [--n 3000] [--chunk-size 16]

The stage is direct_sample's encoder (per-structure ACE descriptors from pyace B-projections,
:func:`pace_worker.descriptors.features_chunk`) over ``n`` structures of the unlabelled pool of
``bench/direct_scale.py`` (written if missing), through :class:`pace_worker.executor.ChunkExecutor`
exactly as the commands use it: workers read their own byte ranges of the file. The Dask
cluster is a real ``dask scheduler`` + two ``dask worker --nthreads 1`` processes on 127.0.0.1
(:class:`pace_worker.dask_cluster.DaskProcesses`), started before the clock starts. Each
configuration runs twice; the faster run counts. Prints structures/s and

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


def run_stage(pool: Path, offsets: list[int], basis: Path, executor) -> tuple[float, np.ndarray]:
    from pace_worker.descriptors import features_chunk, load_basis
    from pace_worker.frames import pool_chunks

    start = time.perf_counter()
    blocks = [result[1] for _, result in executor.map_chunks(
        features_chunk, pool_chunks(pool, executor.chunk_size, "input", offsets=offsets),
        initializer=load_basis, initargs=(str(basis),), total=len(offsets))]
    return time.perf_counter() - start, np.concatenate(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="structures scored per run")
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-direct")
    args = parser.parse_args()

    from direct_scale import write_pool

    from pace_worker.config import DescriptorSettings
    from pace_worker.dask_cluster import DaskProcesses
    from pace_worker.descriptors import write_unfitted_basis
    from pace_worker.executor import ChunkExecutor
    from pace_worker.frames import frame_offsets

    args.workdir.mkdir(parents=True, exist_ok=True)
    pool = args.workdir / "pool_10000.xyz"
    if not pool.is_file():
        write_pool(pool, 10000)
    elements: set = set()
    offsets = frame_offsets(pool, "pool", elements)[:args.n]
    basis = args.workdir / "scaling_basis.yaml"
    write_unfitted_basis(sorted(elements), DescriptorSettings(), basis)

    def best_of_two(executor):
        runs = [run_stage(pool, offsets, basis, executor) for _ in range(2)]
        return min(r[0] for r in runs), runs[0][1]

    times, features = {}, {}
    for workers in (1, 2):
        times[f"local {workers}"], features[f"local {workers}"] = best_of_two(
            ChunkExecutor(workers, args.chunk_size, show_progress=False))
    with DaskProcesses(n_workers=2) as cluster:
        times["dask 2"], features["dask 2"] = best_of_two(
            ChunkExecutor(chunk_size=args.chunk_size, show_progress=False, scheduler=cluster.address))
    for name, f in features.items():
        assert np.array_equal(f, features["local 1"]), f"{name}: features differ from 1 local worker"

    print(f"\n{args.n} structures, chunk size {args.chunk_size}")
    print(f"{'executor':10s} {'seconds':>8s} {'structures/s':>13s}")
    for name, t in times.items():
        print(f"{name:10s} {t:>8.2f} {args.n / t:>13.1f}")
    print(f"speed-up 2 local workers / 1: {times['local 1'] / times['local 2']:.2f} (goal >= 1.8)")
    print(f"Dask overhead (2-worker cluster / 2 local workers): {times['dask 2'] / times['local 2']:.2f} "
          "(goal <= 1.1)")
    print("features identical in all runs")


if __name__ == "__main__":
    main()
