"""SIGTERM and SIGINT to the process group of sample, direct_sample and validate while their
workers run (what ``docker stop``, Slurm's time limit, an orchestrator's cancel and Ctrl-C do),
on local worker processes and on a Dask cluster, each at several moments of the worker phase:
exit 143 / 130 within seconds, at most 3 lines on stderr and no traceback, the outputs of the
run before byte-identical and nothing new beside them, no process of the group left.

Each command first runs to the end once: that run's outputs are the "earlier outputs", and it
measures when the worker phase starts and how long it lasts, so the signals land inside it on
any machine (at fixed fractions of it, counted from the moment the phase starts).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import pytest
from conftest import MAIN

from pace_worker.parallel.dask_cluster import DaskProcesses
from pace_worker.toy_data import emt_dataset, fcc_cells

META = "device: cpu\nthreads: 1\nworkers: 2\nchunk_size: 1\nlog_level: WARNING\n"
STOP_WITHIN_S = 10.0
SIGNALS = {"SIGTERM": (signal.SIGTERM, 143), "SIGINT": (signal.SIGINT, 130)}


@pytest.fixture(scope="module")
def inputs(cold_run, tmp_path_factory):
    """The cold fit's potential, a labelled test set and an unlabelled pool of 32-atom cells."""
    root = tmp_path_factory.mktemp("signals")
    ase.io.write(str(root / "test.xyz"), emt_dataset("Cu", n=160, seed=31, repeat=(2, 2, 2)), format="extxyz")
    ase.io.write(str(root / "pool.xyz"), fcc_cells("Cu", n=500, seed=32, strain=0.06, rattle=0.1, repeat=(2, 2, 2)),
                 format="extxyz")
    (root / "meta.yaml").write_text(META)
    return {"root": root, "potential": cold_run["root"] / "output_potential.yaml"}


def command_args(command: str, inputs: dict, out: Path) -> list:
    root = inputs["root"]
    common = ["--meta-config", root / "meta.yaml"]
    if command == "validate":
        return ["validate", "--potential", inputs["potential"], "--test-set", root / "test.xyz",
                "--output", out / "metrics.json", "--no-plots", *common]
    if command == "sample":
        return ["sample", "--potential", inputs["potential"], "--candidates", root / "pool.xyz", "--n_samples", 5,
                "--output", out / "picks.xyz", *common]
    return ["direct_sample", "--input", root / "pool.xyz", "--n_clusters", 8, "--output", out / "diverse.xyz",
            "--no-plots", *common]


def start(args: list, scheduler=None) -> subprocess.Popen:
    extra = ["--scheduler", scheduler.address] if scheduler is not None else []
    return subprocess.Popen([sys.executable, str(MAIN), *map(str, args), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PACE_WORKER_NO_PROGRESS": "1"})


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
            except ProcessLookupError:
                pass
    return members


class WorkerPhase:
    """Whether the workers of a run are busy: local worker processes of the command, or tasks on
    the Dask scheduler."""

    def __init__(self, proc: subprocess.Popen, scheduler=None):
        self.proc, self.client = proc, None
        if scheduler is not None:
            from distributed import Client

            self.client = Client(scheduler.address, timeout="20s")

    def busy(self) -> bool:
        if self.client is not None:
            return self.client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) > 0
        try:
            return bool(open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split())
        except OSError:
            return False

    def wait_until(self, busy: bool, timeout: float = 120.0) -> float:
        deadline = time.time() + timeout
        while self.busy() != busy and self.proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        return time.time()

    def close(self):
        if self.client is not None:
            self.client.close()


def wait_for_idle_scheduler(scheduler, timeout: float = 60.0) -> None:
    from distributed import Client

    with Client(scheduler.address, timeout="20s") as client:
        deadline = time.time() + timeout
        while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) and time.time() < deadline:
            time.sleep(0.1)


def snapshot(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not k.endswith("_s")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def results(folder: Path) -> dict:
    """The outputs of a run as results: a JSON summary without its timings (``*_s``), every other
    file byte for byte."""
    found = {}
    for path in folder.iterdir():
        if path.is_file():
            found[path.name] = (_without_timings(json.loads(path.read_text())) if path.suffix == ".json"
                                else hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def calibrate(command: str, inputs: dict, out: Path, scheduler=None) -> float:
    """A full run (its outputs are the earlier outputs); the length of its worker phase."""
    proc = start(command_args(command, inputs, out), scheduler)
    phase = WorkerPhase(proc, scheduler)
    try:
        began = phase.wait_until(True)
        ended = phase.wait_until(False)
        _, err = proc.communicate(timeout=300)
    finally:
        phase.close()
    assert proc.returncode == 0, err[-2000:]
    return max(ended - began, 0.05)


def stop_at(command: str, inputs: dict, out: Path, sig: str, fraction: float, length: float, scheduler=None):
    signum, code = SIGNALS[sig]
    before, results_before = snapshot(out), results(out)
    if scheduler is not None:  # tasks of the previous run still being cancelled would look like this run's
        wait_for_idle_scheduler(scheduler)
    proc = start(command_args(command, inputs, out), scheduler)
    phase = WorkerPhase(proc, scheduler)
    try:
        phase.wait_until(True)
        time.sleep(fraction * length)
        assert proc.poll() is None, f"{command} ended before the signal (moment {fraction} of {length:.1f} s)"
        os.killpg(proc.pid, signum)
        sent = time.time()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{command} did not stop within 60 s of {sig}")
        took = time.time() - sent
        if scheduler is not None:  # the run's tasks are cancelled on the cluster
            deadline = time.time() + 15
            while phase.busy() and time.time() < deadline:
                time.sleep(0.1)
            assert not phase.busy(), "tasks of the stopped run are still on the scheduler"
    finally:
        phase.close()
    lines = err.strip().splitlines()
    if proc.returncode == -signum and not err.strip():
        # the signal came in the last moments, after every output was published, while the
        # interpreter tore itself down (it restores the default action then): the command ended
        # by the signal as a plain program does (a shell shows 143), its outputs complete: the
        # same results as the earlier run (its summary's timings aside), nothing beside them
        assert results(out) == results_before, "the run ended by the signal with its outputs incomplete"
        return
    assert proc.returncode == code, (proc.returncode, err[-2000:])
    assert took < STOP_WITHIN_S, f"stopped {took:.1f} s after {sig}"
    assert len(lines) <= 3 and "Traceback" not in err and "Exception ignored" not in err, err
    assert ("terminated" if sig == "SIGTERM" else "interrupted") in lines[-1], lines
    assert snapshot(out) == before, "an earlier output changed, or a file was left beside them"
    deadline = time.time() + 5
    while group_members(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not group_members(proc.pid), "a process of the command outlived it"


MOMENTS = [("SIGTERM", 0.0), ("SIGTERM", 0.3), ("SIGTERM", 0.6), ("SIGINT", 0.15), ("SIGINT", 0.5)]


@pytest.mark.parametrize("command", ["validate", "sample", "direct_sample"])
def test_a_signal_stops_local_workers(command, inputs, tmp_path):
    length = calibrate(command, inputs, tmp_path)
    for sig, fraction in MOMENTS:
        stop_at(command, inputs, tmp_path, sig, fraction, length)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with DaskProcesses(n_workers=2, log_dir=tmp_path_factory.mktemp("dask-signals")) as processes:
        yield processes


@pytest.mark.parametrize("command", ["validate", "sample", "direct_sample"])
def test_a_signal_stops_a_run_on_dask(command, inputs, cluster, tmp_path):
    length = calibrate(command, inputs, tmp_path, cluster)
    for sig, fraction in [("SIGTERM", 0.0), ("SIGTERM", 0.5), ("SIGINT", 0.25)]:
        stop_at(command, inputs, tmp_path, sig, fraction, length, cluster)
