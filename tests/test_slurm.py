"""Dask workers that the command starts as Slurm jobs (meta_config ``dask: {cluster: slurm}``), on a
real Slurm cluster (the one-node cluster of scripts/slurm_local.sh): sample, direct_sample and
validate give the results of local processes, also when a worker job is cancelled mid-run; an
impossible request, a job that stays pending, SIGTERM and Ctrl-C, Slurm missing or down: one line,
and no job of ours left in squeue after any test. ``train`` as a Slurm job through
scripts/slurm/train_cpu.sbatch.

Without a reachable Slurm controller these tests are skipped with the reason (start the cluster with
``eval "$(bash scripts/slurm_local.sh start)"``); with PACE_WORKER_REQUIRE_SLURM=1 (CI) they fail.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import yaml
from conftest import MAIN, REPO, TINY_CONFIG, assert_one_line_error, run_cli, write_dataset

from pace_worker.commands.direct_sample import DirectSampleRequest, direct_sample
from pace_worker.commands.sample import SampleRequest, sample
from pace_worker.commands.validate import ValidateRequest, validate
from pace_worker.config import MetaConfig
from pace_worker.parallel.dask_cluster import free_port
from pace_worker.toy_data import emt_dataset, fcc_cells, unlabelled_pool

# the cluster of scripts/slurm_local.sh, used when SLURM_CONF is not set and no system Slurm is configured
LOCAL_SLURM_CONF = Path(os.environ.get("PACE_WORKER_SLURM_DIR", "/tmp/pace-worker-slurm")) / "slurm.conf"
# every Slurm job of this test session carries this name: "our jobs" in squeue
JOB_NAME = f"pwtest{os.getpid()}"


def slurm_unavailable() -> Optional[str]:
    """Why Slurm cannot be used here, or None."""
    if not os.environ.get("SLURM_CONF") and not Path("/etc/slurm/slurm.conf").exists() and LOCAL_SLURM_CONF.exists():
        os.environ["SLURM_CONF"] = str(LOCAL_SLURM_CONF)
    if shutil.which("sbatch") is None:
        return "Slurm is not installed (no sbatch on PATH)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "the Slurm controller does not answer `scontrol ping`"
    if "is UP" not in ping.stdout:
        said = (ping.stdout + ping.stderr).strip().splitlines()
        return f"no Slurm controller is up (`scontrol ping`: {said[0] if said else 'no output'})"
    return None


UNAVAILABLE = slurm_unavailable()
REQUIRED = bool(os.environ.get("PACE_WORKER_REQUIRE_SLURM"))
needs_slurm = pytest.mark.skipif(UNAVAILABLE is not None and not REQUIRED,
                                 reason=f"{UNAVAILABLE}; start one: eval \"$(bash scripts/slurm_local.sh start)\"")


def our_jobs() -> list[str]:
    """``id name state`` of the Slurm jobs of this test session that squeue lists."""
    proc = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, timeout=30)
    return [line for line in proc.stdout.splitlines() if line.split()[1:2] and line.split()[1].startswith(JOB_NAME)]


@pytest.fixture
def slurm():
    """Slurm is there (or the test fails under PACE_WORKER_REQUIRE_SLURM); after the test squeue lists
    no job of ours — checked at once, not after a grace period (the commands wait for it)."""
    if UNAVAILABLE is not None:
        pytest.fail(f"PACE_WORKER_REQUIRE_SLURM is set but {UNAVAILABLE}")
    yield
    left = our_jobs()
    if left:
        subprocess.run(["scancel", *[line.split()[0] for line in left]], timeout=30)
    assert not left, f"Slurm jobs left after the test: {left}"


def slurm_meta(tmp_path: Path, name: str = "meta.yaml", chunk_size: int = 5, **dask) -> Path:
    """meta_config with two single-core Slurm worker jobs on loopback; ``dask`` overrides keys."""
    block = {"cluster": "slurm", "jobs": 2, "cores": 1, "memory": "2GB", "walltime": "00:20:00",
             "interface": "lo", "job_name": JOB_NAME, "log_directory": str(tmp_path / "slurm-logs"),
             "connect_timeout_s": 120, "chunks_per_task": 3, **dask}
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"chunk_size": chunk_size, "dask": block}))
    return path


@pytest.fixture(scope="module")
def big_pool(tmp_path_factory):
    """A pool that keeps two workers busy for tens of seconds, and its local DIRECT picks."""
    root = tmp_path_factory.mktemp("big")
    pool = write_dataset(root / "pool.xyz", unlabelled_pool(2500, seed=11))
    local = direct_sample(DirectSampleRequest(input=pool, output=root / "local.xyz", n_clusters=25, plots=False))
    return pool, local


def start_cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(MAIN), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PACE_WORKER_NO_PROGRESS": "1"})


def registered_scheduler(log_dir: Path, n_workers: int, proc: subprocess.Popen, timeout_s: float = 180) -> str:
    """The scheduler address once ``n_workers`` worker jobs have registered with it (from their logs)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        found = [re.search(r"Registered to:\s+(tcp://\S+)", p.read_text()) for p in log_dir.glob("*.err")]
        found = [m.group(1) for m in found if m]
        if len(found) >= n_workers:
            return found[0]
        time.sleep(0.3)
    raise AssertionError(f"{n_workers} workers did not register (command ended: {proc.poll() is not None})")


# ----------------------------------------------------------------------------- same results
@needs_slurm
def test_direct_sample_on_slurm_workers_equals_local(slurm, tmp_path):
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(120, seed=7))
    local = direct_sample(DirectSampleRequest(input=pool, output=tmp_path / "local.xyz", n_clusters=12,
                                              meta=MetaConfig(workers=1, chunk_size=50), plots=False))
    proc = run_cli("direct_sample", "--meta-config", slurm_meta(tmp_path), "--input", pool,
                   "--output", tmp_path / "slurm.xyz", "--n_clusters", 12, "--no-plots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "slurm_report.json").read_text())
    assert [p["pool_index"] for p in report["picks"]] == local.picks
    assert report["coverage"] == local.report["coverage"]
    # the chunks ran in the two Slurm jobs: both workers registered and were cancelled at the end
    logs = sorted((tmp_path / "slurm-logs").glob(f"{JOB_NAME}-*.err"))
    assert len(logs) == 2 and all("Registered to:" in p.read_text() for p in logs)
    assert "first Dask worker connected" in proc.stderr


@needs_slurm
def test_validate_and_sample_on_slurm_workers_equal_local(slurm, cold_run, tmp_path):
    root = cold_run["root"]
    potential = root / "output_potential.yaml"
    meta = slurm_meta(tmp_path)
    local = validate(ValidateRequest(potential=potential, output=tmp_path / "local.json", test_set=root / "train.xyz",
                                     plots=False, meta=MetaConfig(workers=1))).metrics
    proc = run_cli("validate", "--meta-config", meta, "--potential", potential, "--test-set", root / "train.xyz",
                   "--output", tmp_path / "slurm.json", "--no-plots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    on_slurm = json.loads((tmp_path / "slurm.json").read_text())
    for key in ("energy_rmse_mev_per_atom", "force_rmse_mev_per_A"):
        assert on_slurm[key] == pytest.approx(local[key], rel=1e-12), key
    for group, values in local["per_group"].items():
        assert on_slurm["per_group"][group] == pytest.approx(values, rel=1e-12), group
    assert on_slurm["gamma"]["max"] == pytest.approx(local["gamma"]["max"], rel=1e-12)
    assert on_slurm["timing"]["scheduler"].startswith("tcp://127.0.0.1:")

    write_dataset(tmp_path / "pool.xyz", fcc_cells("Cu", n=30, seed=5, strain=0.06, rattle=0.1))
    for strategy in ("maxvol", "random"):
        here = sample(SampleRequest(candidates=tmp_path / "pool.xyz", n_samples=5,
                                    output=tmp_path / f"l_{strategy}.xyz", potential=potential, strategy=strategy,
                                    meta=MetaConfig(workers=2, chunk_size=7)))
        proc = run_cli("sample", "--meta-config", meta, "--candidates", tmp_path / "pool.xyz", "--n_samples", 5,
                       "--output", tmp_path / f"s_{strategy}.xyz", "--potential", potential, "--strategy", strategy)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads((tmp_path / f"s_{strategy}_report.json").read_text())
        assert [p["pool_index"] for p in report["picks"]] == here.picks, strategy
        assert report["pool_gamma"] == here.report["pool_gamma"], strategy


@needs_slurm
def test_cancelled_worker_job_does_not_change_the_result(slurm, big_pool, tmp_path):
    """scancel the Slurm job of a worker that holds chunks, while direct_sample runs on two jobs."""
    from distributed import Client

    pool, local = big_pool
    proc = start_cli("direct_sample", "--meta-config", slurm_meta(tmp_path, chunk_size=10), "--input", pool,
                     "--output", tmp_path / "d.xyz", "--n_clusters", 25, "--no-plots")
    address = registered_scheduler(tmp_path / "slurm-logs", 2, proc)
    with Client(address, timeout="30s") as client:
        job_of = client.run(lambda: os.environ["SLURM_JOB_ID"])  # worker address -> its Slurm job
        deadline = time.time() + 120
        busy = []
        while time.time() < deadline and not busy:
            busy = [w for w, keys in client.processing().items() if keys]
            time.sleep(0.2)
        assert busy and proc.poll() is None, "no worker held chunks while the command ran"
        victim = job_of[busy[0]]
        subprocess.run(["scancel", victim], check=True, timeout=30)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "CANCELLED" in (tmp_path / "slurm-logs" / f"{JOB_NAME}-{victim}.err").read_text()
    report = json.loads((tmp_path / "d_report.json").read_text())
    assert [p["pool_index"] for p in report["picks"]] == local.picks
    assert np.isclose(report["coverage"]["direct"], local.report["coverage"]["direct"])


# ----------------------------------------------------------------------------- failures: one line, no job left
def dashboard_port_taken():
    """Port 8787 (Dask's default dashboard port) held as another scheduler on this host would hold it
    (a no-op if something already does)."""
    import contextlib
    import socket

    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", 8787))
        holder.listen()
    except OSError:
        holder.close()
        return contextlib.nullcontext()
    return contextlib.closing(holder)


@needs_slurm
def test_more_memory_than_the_node_has_is_one_line(slurm, tmp_path):
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(20, seed=1))
    begin = time.time()
    with dashboard_port_taken():  # still one line: our scheduler's HTTP server takes any free port
        proc = run_cli("direct_sample", "--meta-config", slurm_meta(tmp_path, memory="500TB", connect_timeout_s=30),
                       "--input", pool, "--output", tmp_path / "o.xyz", "--n_clusters", 3)
    line = assert_one_line_error(proc, "Slurm refuses the Dask worker job", "dask.memory 500TB", "nodes:")
    assert time.time() - begin < 30, line
    assert not (tmp_path / "o.xyz").exists()


@needs_slurm
def test_job_that_stays_pending_is_one_line_after_the_timeout(slurm, tmp_path):
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(20, seed=1))
    meta = slurm_meta(tmp_path, connect_timeout_s=6, job_extra_directives=["--begin=now+1hour"])
    begin = time.time()
    proc = run_cli("direct_sample", "--meta-config", meta, "--input", pool, "--output", tmp_path / "o.xyz",
                   "--n_clusters", 3)
    elapsed = time.time() - begin
    assert_one_line_error(proc, "no Dask worker connected within dask.connect_timeout_s = 6 s", "PENDING",
                          "BeginTime", "cancelled")
    assert elapsed < 6 + 30  # the timeout, plus Python's start and the cancellation
    assert not (tmp_path / "o.xyz").exists()


@needs_slurm
def test_sigterm_mid_run_cancels_the_jobs(slurm, big_pool, tmp_path):
    pool, _ = big_pool
    proc = start_cli("direct_sample", "--meta-config", slurm_meta(tmp_path, chunk_size=10), "--input", pool,
                     "--output", tmp_path / "d.xyz", "--n_clusters", 25, "--no-plots")
    registered_scheduler(tmp_path / "slurm-logs", 2, proc)
    time.sleep(2)  # chunks are being worked on
    assert proc.poll() is None and len(our_jobs()) == 2
    begin = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "terminated" in err.strip().splitlines()[-1]
    assert time.time() - begin < 60
    assert not (tmp_path / "d.xyz").exists()


@needs_slurm
def test_ctrl_c_while_waiting_for_jobs_cancels_them(slurm, tmp_path):
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(20, seed=1))
    meta = slurm_meta(tmp_path, connect_timeout_s=300, job_extra_directives=["--begin=now+1hour"])
    proc = start_cli("direct_sample", "--meta-config", meta, "--input", pool, "--output", tmp_path / "o.xyz",
                     "--n_clusters", 3)
    deadline = time.time() + 120
    while time.time() < deadline and len(our_jobs()) < 2 and proc.poll() is None:
        time.sleep(0.3)
    assert [line.split()[2] for line in our_jobs()] == ["PENDING", "PENDING"]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]


def test_slurm_not_installed_is_one_line(tmp_path):
    """Needs no Slurm: PATH holds only Python."""
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(5, seed=1))
    proc = run_cli("direct_sample", "--meta-config", slurm_meta(tmp_path), "--input", pool,
                   "--output", tmp_path / "o.xyz", "--n_clusters", 2, env={"PATH": str(Path(sys.executable).parent)})
    assert_one_line_error(proc, "needs Slurm's commands", "sbatch", "not on PATH")
    assert not (tmp_path / "o.xyz").exists()


@pytest.mark.skipif(shutil.which("scontrol") is None, reason="Slurm's client commands are not installed")
def test_slurm_controller_down_is_one_line(tmp_path):
    """A slurm.conf whose controller port nobody listens on: what a user sees when slurmctld is down."""
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=down\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={free_port()}\n"
                    "AuthType=auth/munge\nNodeName=localhost CPUs=1\nPartitionName=debug Nodes=localhost Default=YES\n")
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(5, seed=1))
    begin = time.time()
    proc = run_cli("direct_sample", "--meta-config", slurm_meta(tmp_path, connect_timeout_s=900), "--input", pool,
                   "--output", tmp_path / "o.xyz", "--n_clusters", 2, env={"SLURM_CONF": str(conf)})
    assert_one_line_error(proc, "Slurm controller is not reachable", "scontrol ping", "DOWN")
    # found before any job is submitted, not after the connect timeout (900 s); the slack is for
    # Python's start on a loaded machine (7 s alone, 107 s measured at load 5 on 2 cores)
    assert time.time() - begin < 300


# ----------------------------------------------------------------------------- train as a Slurm job
def test_sbatch_scripts_are_valid_bash():
    for script in sorted((REPO / "scripts" / "slurm").glob("*.sbatch")):
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, (script, proc.stderr)
        assert "exec \"$venv/bin/pace-worker\" train \"$@\"" in script.read_text()


@needs_slurm
def test_train_as_a_slurm_job_with_the_cpu_script(slurm, tmp_path):
    """scripts/slurm/train_cpu.sbatch as the README submits it (resources overridden on the sbatch line)."""
    write_dataset(tmp_path / "train.xyz", emt_dataset("Cu", n=14, seed=1))
    (tmp_path / "config.yaml").write_text(TINY_CONFIG)
    (tmp_path / "meta.yaml").write_text("device: cpu\n")
    proc = subprocess.run(
        ["sbatch", "--wait", "--parsable", f"--job-name={JOB_NAME}-train", "--cpus-per-task=2", "--mem=4G",
         "--time=00:20:00", f"--output={tmp_path}/train-%j.out", str(REPO / "scripts" / "slurm" / "train_cpu.sbatch"),
         "--config", "config.yaml", "--meta-config", "meta.yaml", "--dataset", "train.xyz", "--iteration", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PACE_WORKER_VENV": str(Path(sys.executable).parent.parent)})
    job_id = proc.stdout.strip().split(";")[0]
    log = (tmp_path / f"train-{job_id}.out").read_text()
    assert proc.returncode == 0, (proc.stderr, log[-3000:])
    assert f"job {job_id} on " in log and "2 CPU(s)" in log and "iteration 1 (cold)" in log
    for name in ("output_potential.yaml", "output_potential.yace", "output_potential.asi", "train_metrics.json"):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    assert metrics["device"]["used"] == "cpu"
    assert metrics["test"]["energy_rmse_mev_per_atom"] < 20 and metrics["test"]["force_rmse_mev_per_A"] < 120
