"""sample, direct_sample and validate on a real Dask cluster (a `dask scheduler` and two
`dask worker` processes on 127.0.0.1): the same results as local processes, also when a worker
is killed mid-run; one clear line when the scheduler cannot be reached."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from conftest import run_cli, write_dataset
from distributed import Client

from pace_worker.commands.direct_sample import DirectSampleRequest, direct_sample
from pace_worker.commands.sample import SampleRequest, sample
from pace_worker.commands.validate import ValidateRequest, validate
from pace_worker.config import MetaConfig
from pace_worker.parallel.dask_cluster import DaskProcesses, free_port
from pace_worker.toy_data import fcc_cells, unlabelled_pool


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real scheduler and two single-threaded workers, each its own process."""
    with DaskProcesses(n_workers=2, log_dir=tmp_path_factory.mktemp("dask")) as processes:
        yield processes


def on_dask(address, **kw) -> MetaConfig:
    meta = MetaConfig(chunk_size=5, **kw)
    meta.dask.scheduler_address = address
    meta.dask.chunks_per_task = 3  # groups of chunks per task; the pools here do not divide evenly
    return meta


def test_direct_sample_same_on_dask(cluster, tmp_path):
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(120, seed=7))
    local = direct_sample(DirectSampleRequest(input=pool, output=tmp_path / "local.xyz", n_clusters=12,
                                              meta=MetaConfig(workers=1, chunk_size=50), plots=False))
    # through the CLI flag, as a user would
    proc = run_cli("direct_sample", "--input", pool, "--output", tmp_path / "dask.xyz", "--n_clusters", 12,
                   "--scheduler", cluster.address, "--no-plots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "dask_report.json").read_text())
    assert [p["pool_index"] for p in report["picks"]] == local.picks
    assert report["coverage"] == local.report["coverage"]


def test_validate_and_sample_same_on_dask(cluster, cold_run, tmp_path):
    root = cold_run["root"]
    potential = root / "output_potential.yaml"
    runs = [validate(ValidateRequest(potential=potential, output=tmp_path / f"v{i}.json", test_set=root / "train.xyz",
                                     plots=False, meta=meta)).metrics
            for i, meta in enumerate((MetaConfig(workers=1), on_dask(cluster.address)))]
    for key in ("energy_rmse_mev_per_atom", "force_rmse_mev_per_A"):
        assert runs[1][key] == pytest.approx(runs[0][key], rel=1e-12), key
    for group, values in runs[0]["per_group"].items():
        assert runs[1]["per_group"][group] == pytest.approx(values, rel=1e-12), group
    assert runs[1]["gamma"]["max"] == pytest.approx(runs[0]["gamma"]["max"], rel=1e-12)
    assert runs[1]["timing"]["scheduler"] == cluster.address

    pool = fcc_cells("Cu", n=30, seed=5, strain=0.06, rattle=0.1)
    write_dataset(tmp_path / "pool.xyz", pool)
    picks = {}
    for name, meta in (("local", MetaConfig(workers=2, chunk_size=7)), ("dask", on_dask(cluster.address))):
        for strategy in ("maxvol", "random"):
            r = sample(SampleRequest(candidates=tmp_path / "pool.xyz", n_samples=5, output=tmp_path / f"{name}.xyz",
                                     potential=potential, strategy=strategy, meta=meta))
            picks[name, strategy] = (r.picks, r.report["pool_gamma"])
    assert picks["local", "maxvol"] == picks["dask", "maxvol"]
    assert picks["local", "random"] == picks["dask", "random"]


def test_unreachable_scheduler_is_one_line(tmp_path):
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(5, seed=1))
    meta = tmp_path / "meta.yaml"
    meta.write_text(f"dask: {{scheduler_address: 'tcp://127.0.0.1:{free_port()}', connect_timeout_s: 2}}\n")
    proc = run_cli("direct_sample", "--meta-config", meta, "--input", pool, "--output", tmp_path / "o.xyz",
                   "--n_clusters", 2)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Dask scheduler" in lines[0], proc.stderr
    assert not (tmp_path / "o.xyz").exists()


def test_killed_worker_does_not_change_the_result(cluster, tmp_path):
    """Kill one of the two workers (with its nanny) while direct_sample runs on the cluster."""
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(2500, seed=11))
    local = direct_sample(DirectSampleRequest(input=pool, output=tmp_path / "local.xyz", n_clusters=25,
                                              plots=False))
    meta = tmp_path / "meta.yaml"
    meta.write_text(f"chunk_size: 10\ndask: {{scheduler_address: '{cluster.address}'}}\n")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent.parent / "src" / "main.py"), "direct_sample",
                             "--meta-config", str(meta), "--input", str(pool), "--output", str(tmp_path / "d.xyz"),
                             "--n_clusters", "25", "--no-plots"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PACE_WORKER_NO_PROGRESS": "1"})
    victim = cluster.workers[0]
    report_path = tmp_path / "d_report.json"
    with Client(cluster.address, timeout="30s") as client:  # wait until chunks are being worked on
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) >= 4:
                break
            time.sleep(0.2)
    assert proc.poll() is None, "the run ended before the worker could be killed; make the pool bigger"
    cluster.kill_worker(0)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert victim.poll() is not None
    report = json.loads(report_path.read_text())
    assert [p["pool_index"] for p in report["picks"]] == local.picks
    assert np.isclose(report["coverage"]["direct"], local.report["coverage"]["direct"])
    picked = ase.io.read(tmp_path / "d.xyz", ":")
    assert len(picked) == len(local.picks)


def test_task_groups_shrink_towards_the_end_and_keep_order():
    from pace_worker.parallel.executor import _groups

    groups = list(_groups(range(188), 8, 188, threads=2))
    assert [c for g in groups for c in g] == list(range(188))  # every chunk once, in order
    sizes = [len(g) for g in groups]
    assert sizes[0] == 8 and sizes[-1] == 1 and sizes == sorted(sizes, reverse=True)
    assert len(groups) < 188 // 4  # far fewer tasks than chunks
    assert [len(g) for g in _groups(range(20), 8, None, threads=2)] == [8, 8, 4]  # length unknown: fixed size


def test_no_worker_left_mid_run_is_one_line(tmp_path):
    """The only worker dies while its chunks run (a Slurm job at its walltime does the same): the
    command stops after dask.connect_timeout_s with one line instead of waiting forever."""
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(1000, seed=3))
    with DaskProcesses(n_workers=1, log_dir=tmp_path) as lone:
        meta = tmp_path / "meta.yaml"
        meta.write_text(f"chunk_size: 10\ndask: {{scheduler_address: '{lone.address}', connect_timeout_s: 3}}\n")
        proc = subprocess.Popen([sys.executable, str(Path(__file__).parent.parent / "src" / "main.py"),
                                 "direct_sample", "--meta-config", str(meta), "--input", str(pool),
                                 "--output", str(tmp_path / "d.xyz"), "--n_clusters", "10", "--no-plots"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PACE_WORKER_NO_PROGRESS": "1"})
        with Client(lone.address, timeout="30s") as client:
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None and not any(client.processing().values()):
                time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the worker could be killed"
        lone.kill_worker(0)
        killed = time.time()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "has had no worker for 3 s" in lines[0], err
    assert time.time() - killed < 3 + 5 + 20  # the timeout, one wait of up to 5 s, and slack for a busy machine
    assert not (tmp_path / "d.xyz").exists()
