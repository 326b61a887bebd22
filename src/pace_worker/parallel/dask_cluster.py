"""A real Dask cluster on this machine as separate processes — ``dask scheduler`` and
``dask worker`` exactly as the README starts them by hand — for tests, benchmarks and trying
``--scheduler`` out. Production clusters are started by their admins or by dask-jobqueue.

    with DaskProcesses(n_workers=2) as cluster:
        ... --scheduler cluster.address ...
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

# Settings for CPU-bound pyace tasks: no statistical profiler, and slower health ticks, system
# monitor and memory checks than Dask's defaults (their cost is in README "Scale-out"). None of
# them changes what is computed.
CLUSTER_ENVIRONMENT = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "2s",
    "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "1s",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_command() -> list[str]:
    script = Path(sys.executable).parent / "dask"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dask"]


class DaskProcesses:
    """A scheduler on 127.0.0.1 and ``n_workers`` single-threaded workers, each its own process
    group (:meth:`kill_worker` kills one with its nanny, as a crashed node would)."""

    def __init__(self, n_workers: int = 2, log_dir: Optional[Path] = None, timeout_s: float = 60.0):
        self.n_workers = n_workers
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="pace-worker-dask-"))
        self.timeout_s = timeout_s
        self.address: Optional[str] = None
        self.scheduler: Optional[subprocess.Popen] = None
        self.workers: list[subprocess.Popen] = []

    def _start(self, *args: str, log: str) -> subprocess.Popen:
        return subprocess.Popen([*_dask_command(), *args], stdout=open(self.log_dir / log, "w"),
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **CLUSTER_ENVIRONMENT, "PACE_WORKER_NO_PROGRESS": "1"})

    def __enter__(self) -> "DaskProcesses":
        from distributed import Client

        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.scheduler = self._start("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                                     "--dashboard-address", ":0", log="scheduler.log")  # its HTTP server: any free port
        self.workers = [self._start("worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                                    "--name", f"w{i}", log=f"worker{i}.log") for i in range(self.n_workers)]
        try:
            with Client(self.address, timeout=f"{self.timeout_s}s") as client:
                client.wait_for_workers(self.n_workers, timeout=self.timeout_s)
        except BaseException:
            self.__exit__()
            raise
        return self

    def kill_worker(self, index: int = 0) -> None:
        _stop(self.workers[index], signal.SIGKILL)

    def __exit__(self, *exc) -> None:
        for proc in self.workers + ([self.scheduler] if self.scheduler else []):
            _stop(proc)


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
