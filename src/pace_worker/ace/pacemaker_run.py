"""Running pacemaker in its own working folder, in a child process.

A child process keeps pacemaker's global side effects (root logging, TensorFlow globals,
the current directory it writes everything into) out of the worker, lets the device be
chosen before TensorFlow starts, and can be stopped cleanly. Its output goes to
``pacemaker.out`` in the working folder; pacemaker's own ``log.txt`` is there too. On a
terminal a progress bar follows the optimizer's iterations; in logs it stays quiet.
"""
from __future__ import annotations

import contextlib
import ctypes
import getpass
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

from pace_worker.ace.pacemaker_child import BUDGET_STOP_FILE, DEVICE_LINE, NO_GPU_EXIT
from pace_worker.config import MetaConfig
from pace_worker.errors import DiskFull, FitError, InputError
from pace_worker.progress import Progress

log = logging.getLogger(__name__)

ITERATION_LINE = re.compile(r"Iteration\s+#(\d+)\s+\(\d+ evals\):\s+Loss:\s+([0-9.eE+-]+)")
OUTPUT_NAME = "pacemaker.out"


@dataclass
class FitRun:
    """What one pacemaker run left behind."""

    workdir: Path
    wall_time_s: float
    device: dict = field(default_factory=dict)
    iterations: int = 0
    budget_stop: Optional[dict] = None  # set when the time budget ended the fit (budget_stop.json)

    @property
    def output_potential(self) -> Path:
        return self.workdir / "output_potential.yaml"


def budget_grace_s(max_time: float) -> float:
    """How long past its budget a fit may run before it is killed: the budget is checked after each
    optimizer step, so this is the room for one slow step (or TensorFlow's start-up)."""
    return max(60.0, 0.25 * max_time)


def child_environment(meta: MetaConfig, deadline: Optional[float] = None) -> dict:
    """Environment of the fit process: device visibility and threads are fixed before TF starts."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    # TensorFlow's CPU kernels allocate and free large tensors at every step; transparent huge pages
    # for glibc's heap cut the page faults ~18x and a BFGS step of the 700-function template on the
    # Si benchmark from ~33 s to ~17 s (2 cores); glibc versions without the tunable ignore it
    env.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    if meta.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif meta.gpu_index is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(meta.gpu_index)
    if meta.threads:
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(meta.threads)
    env["PACE_WORKER_CHILD"] = json.dumps({"device": meta.device, "threads": meta.threads, "deadline": deadline})
    # pacemaker calls getpass.getuser() when imported: a uid without a passwd entry (docker run
    # --user 1000:1000, Kubernetes) would fail there unless the environment names a user
    if not any(env.get(k) for k in ("LOGNAME", "USER", "LNAME", "USERNAME")):
        try:
            getpass.getuser()
        except (KeyError, OSError):
            env["LOGNAME"] = f"uid{os.getuid()}"
    # the child must import this very package, installed or not
    src = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the fit process gets SIGTERM if the worker dies (even by SIGKILL), so no orphaned
    pacemaker keeps writing into an iteration folder that a rerun wants to use."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _last_error_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line.strip()):
            return line.strip()
    return lines[-1].strip() if lines else "no output"


def run_pacemaker(workdir: Path, meta: MetaConfig, args: Sequence[str] = ("input.yaml",),
                  maxiter: Optional[int] = None, show_progress: Optional[bool] = None,
                  max_time: Optional[float] = None) -> FitRun:
    """Run ``pacemaker <args>`` in ``workdir``; raise FitError if it fails.

    ``max_time`` (seconds): the fit's wall-time budget. The fit stops at the first optimizer
    step past it and finishes normally (see :mod:`pace_worker.ace.pacemaker_child`); one that runs
    :func:`budget_grace_s` longer (no step to stop at) is killed and fails.
    """
    workdir = Path(workdir)
    (workdir / BUDGET_STOP_FILE).unlink(missing_ok=True)
    log.info("pacemaker starts in %s (device %s%s)", workdir, meta.device,
             f", time budget {max_time:g} s" if max_time else "")
    start = time.perf_counter()
    deadline = time.time() + max_time if max_time else None
    progress = Progress("fitting", total=maxiter, enabled=show_progress)
    with open(workdir / OUTPUT_NAME, "a", buffering=1) as out, progress as bar:
        proc = _start_child(workdir, meta, args, deadline)
        with _budget_watchdog(proc, max_time) as killed_past_budget:
            iterations = _follow_output(proc, out, bar)
    wall = time.perf_counter() - start
    device = json.loads((workdir / "device.json").read_text()) if (workdir / "device.json").is_file() else {}
    _check_finished(workdir, proc.returncode, killed_past_budget.is_set(), meta, max_time)
    budget_stop = _budget_stop(workdir, max_time)
    log.info("pacemaker finished in %.1f s after %d iterations", wall, iterations)
    return FitRun(workdir=workdir, wall_time_s=wall, device=device, iterations=iterations, budget_stop=budget_stop)


def _start_child(workdir: Path, meta: MetaConfig, args: Sequence[str], deadline: Optional[float]) -> subprocess.Popen:
    """``pacemaker <args>`` in the child process (:mod:`pace_worker.ace.pacemaker_child`), its output piped."""
    cmd = [sys.executable, "-m", "pace_worker.ace.pacemaker_child", *args]
    return subprocess.Popen(cmd, cwd=workdir, env=child_environment(meta, deadline), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


@contextlib.contextmanager
def _budget_watchdog(proc: subprocess.Popen, max_time: Optional[float]) -> Iterator[threading.Event]:
    """Kill ``proc`` :func:`budget_grace_s` past its budget; the event says whether that happened."""
    killed = threading.Event()
    if not max_time:
        yield killed
        return

    def _kill_past_budget():
        killed.set()
        proc.kill()

    watchdog = threading.Timer(max_time + budget_grace_s(max_time), _kill_past_budget)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield killed
    finally:
        watchdog.cancel()


def _follow_output(proc: subprocess.Popen, out, bar) -> int:
    """Copy the child's output to ``out`` until it exits, forwarding its device line to the log and its
    optimizer iterations to the progress bar; returns the last iteration seen. The child is stopped
    if following it fails or is interrupted."""
    iterations = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if line.startswith(DEVICE_LINE):
                log.info(line[len(DEVICE_LINE):].strip())
            match = ITERATION_LINE.search(line)
            if match:
                iterations = int(match.group(1))
                bar.update(iterations, loss=float(match.group(2)))
        proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    return iterations


def _check_finished(workdir: Path, returncode: int, killed_past_budget: bool, meta: MetaConfig,
                    max_time: Optional[float]) -> None:
    """Raise the error that says why a finished child left no potential (InputError, FitError, DiskFull)."""
    out_path = workdir / OUTPUT_NAME
    if returncode == NO_GPU_EXIT:
        raise InputError(f"meta_config device: {meta.device} asks for a GPU but TensorFlow sees none; "
                         "set device: auto (GPU when present) or cpu")
    if killed_past_budget:
        raise FitError(f"the fit ran {budget_grace_s(max_time):.0f} s past its time budget (fit.max_time "
                       f"{max_time:g} s) without an optimizer step to stop at, and was killed; nothing was "
                       f"published. Raise fit.max_time; output in {out_path}")
    if returncode != 0:
        last = _last_error_line(out_path)
        if "[Errno 28]" in last or "[Errno 122]" in last:  # ENOSPC, EDQUOT in pacemaker's own writes
            raise DiskFull(f"the file system of '{workdir}' is full (pacemaker: {last}); free space there or give "
                           f"another meta_config work_dir, and rerun. Earlier outputs are as they were")
        raise FitError(f"pacemaker failed (exit {returncode}): {last}; full output in {out_path}")
    if not (workdir / "output_potential.yaml").is_file():
        raise FitError(f"pacemaker finished without writing output_potential.yaml; see {out_path}")


def _budget_stop(workdir: Path, max_time: Optional[float]) -> Optional[dict]:
    """The child's record of a fit that its time budget ended (``budget_stop.json``), or None."""
    if not (workdir / BUDGET_STOP_FILE).is_file():
        return None
    budget_stop = {"max_time_s": max_time, **json.loads((workdir / BUDGET_STOP_FILE).read_text())}
    log.warning("the time budget (fit.max_time %g s) ended the fit after %d optimizer steps; publishing the "
                "potential reached so far", max_time, budget_stop["optimizer_steps"])
    return budget_stop
