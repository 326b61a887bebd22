"""Dask workers as Slurm jobs for the length of one command (meta_config ``dask: {cluster: slurm, ...}``).

Guarantee: every Slurm job submitted here is cancelled before the command ends — when it succeeds,
fails, or is stopped by SIGTERM or Ctrl-C — and the command waits until ``squeue`` no longer lists
it (up to a minute; a warning names a job still listed then). Only SIGKILL of the command skips
this; then each worker, left without its scheduler, exits after ``dask.death_timeout`` seconds
(60), which ends its job.

The workers are dask-jobqueue's ``SLURMCluster``: its scheduler runs in this process, and each job
runs ``dask worker`` with ``processes`` single-threaded worker processes (the executor runs one
chunk at a time per process). The jobs are submitted when the first chunks need them, after the
command has checked its inputs, so bad input never costs a Slurm job.

Failures a cluster produces are one line (:class:`~pace_worker.errors.InputError`, exit 2):

* Slurm's commands missing, or its controller down (``scontrol ping``, before any submission);
* a job Slurm refuses (``sbatch --test-only`` of the real job script: more memory or cores than a
  node has, an unknown partition, ...; the message says what was asked and what the nodes have);
* no worker connected within ``dask.connect_timeout_s`` (jobs pending, or running but unable to
  reach the scheduler): each job's state and Slurm's reason are named.

A job that dies during a run costs the rerun of its chunks on the other workers (Dask); the
executor stops with one line when no worker is left for ``dask.connect_timeout_s``.
"""
from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Iterator, Optional

from pace_worker.errors import InputError, first_line
from pace_worker.parallel.dask_cluster import CLUSTER_ENVIRONMENT

log = logging.getLogger(__name__)

SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "scontrol")
# how long closing waits for Slurm to take the cancelled jobs out of the queue
CANCEL_WAIT_S = 60.0
# how often the wait for the first worker says what Slurm says about the jobs (INFO)
WAIT_REPORT_S = 60.0
# job states after which a job holds no resources (squeue -j lists them for a while)
ENDED_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}


def _slurm(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def slurm_error_line(text: str) -> str:
    """Slurm's own words from a client's output: its ``error:`` lines joined into one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [re.sub(r"^(sbatch|squeue|scontrol|scancel): error: ", "", line) for line in lines
              if "error" in line.lower() or "failure" in line.lower()]
    return "; ".join(dict.fromkeys(errors or lines[-1:])) or "no message"


def check_slurm_reachable() -> None:
    """Slurm's commands are on PATH and its controller answers, or one InputError saying which not."""
    missing = [name for name in SLURM_COMMANDS if shutil.which(name) is None]
    if missing:
        raise InputError(f"dask.cluster: slurm needs Slurm's commands, and {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not on PATH; "
                         "run on a node of the Slurm cluster (e.g. its login node), or remove dask.cluster "
                         "from meta_config to run on local processes")
    try:
        ping = _slurm("scontrol", "ping")
    except subprocess.TimeoutExpired:
        ping = None
    if ping is None or not re.search(r"\bis UP\b", ping.stdout):
        said = "no answer within 30 s" if ping is None else \
            next((line.strip() for line in (ping.stdout + ping.stderr).splitlines() if "*" not in line
                  and line.strip()), "no output")
        raise InputError(f"dask.cluster: slurm: the Slurm controller is not reachable (`scontrol ping`: {said}); "
                         "start slurmctld or ask the cluster's admins, or remove dask.cluster from meta_config "
                         "to run on local processes")


def _what_was_asked(settings) -> str:
    queue = f"partition {settings.queue}" if settings.queue else "the default partition"
    return (f"dask.cores {settings.cores}, dask.memory {settings.memory} per job, {queue}"
            + (f", walltime {settings.walltime}" if settings.walltime else ""))


def _what_nodes_have(queue: Optional[str]) -> str:
    args = ["sinfo", "-h", "-o", "%P %c %m"] + (["-p", queue] if queue else [])
    try:
        proc = _slurm(*args, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    rows = [line.split() for line in proc.stdout.splitlines() if len(line.split()) == 3]
    if proc.returncode != 0 or not rows:
        return ""
    return " (nodes: " + ", ".join(f"{p} {c} CPUs {m} MB" for p, c, m in rows[:4]) + ")"


def check_job_accepted(job_script: str, settings) -> None:
    """``sbatch --test-only`` of the job script: Slurm's verdict on the request without submitting it."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="pace-worker-dask-") as script:
        script.write(job_script)
        script.flush()
        try:
            proc = _slurm("sbatch", "--test-only", script.name, timeout=60)
        except subprocess.TimeoutExpired:
            raise InputError("dask.cluster: slurm: `sbatch --test-only` got no answer within 60 s; is the Slurm "
                             "controller overloaded? Try again, or remove dask.cluster to run on local processes")
    if proc.returncode != 0:
        raise InputError(f"Slurm refuses the Dask worker job ({slurm_error_line(proc.stderr + proc.stdout)}): "
                         f"asked for {_what_was_asked(settings)}{_what_nodes_have(settings.queue)}; "
                         "change the dask block of meta_config")


def job_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{job id: (state, reason)}`` of the jobs squeue still knows; ended jobs drop out."""
    if not job_ids:
        return {}
    try:
        proc = _slurm("squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r", timeout=30)
    except subprocess.TimeoutExpired:
        return {i: ("UNKNOWN", "squeue did not answer") for i in job_ids}
    if proc.returncode != 0 and "invalid job id" not in proc.stderr.lower():  # not "all of them ended"
        return {i: ("UNKNOWN", f"squeue: {slurm_error_line(proc.stderr)}") for i in job_ids}
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0] in job_ids and parts[1] not in ENDED_STATES:
            states[parts[0]] = (parts[1], parts[2])
    return states


def cancel_jobs(job_ids: list[str], wait_s: float = CANCEL_WAIT_S) -> list[str]:
    """Cancel these jobs and wait until squeue no longer lists them; returns those still listed."""
    left = list(job_states(job_ids))
    if left:
        try:
            _slurm("scancel", *left)
        except subprocess.TimeoutExpired:  # the controller is slow: squeue below says what is left
            log.debug("scancel %s did not return within 30 s", " ".join(left))
    deadline = time.monotonic() + wait_s
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = list(job_states(left))
    return left


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the block is done (cleanup must not be cut short); a signal that
    arrived meanwhile is delivered to the handler in place once the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])


def _import_slurm_cluster():
    """dask_jobqueue's SLURMCluster, imported without its side effect: importing dask_jobqueue sets a
    process-wide SIGINT handler that calls sys.exit() (dask_jobqueue/runner.py), which would turn
    Ctrl-C into exit status 0 with the command half done; the handler in place is put back."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if in_main else None
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise InputError("dask.cluster: slurm needs dask-jobqueue: pip install dask-jobqueue (scripts/install.sh "
                         "installs it)")
    finally:
        if in_main and previous is not None:
            signal.signal(signal.SIGINT, previous)
    return SLURMCluster


class _Ledger:
    """What the Slurm jobs of one cluster did: the ids sbatch gave them, and sbatch's refusals."""

    def __init__(self) -> None:
        self.job_ids: list[str] = []
        self.refusals: list[str] = []


def _job_class(ledger: _Ledger):
    """dask-jobqueue's SLURMJob that writes into ``ledger``. A refused submission is recorded, not
    raised: raised inside Dask's event loop it would only be logged, and the command would wait."""
    _import_slurm_cluster()
    from dask_jobqueue.slurm import SLURMJob
    from distributed.deploy.spec import ProcessInterface

    class LedgerSLURMJob(SLURMJob):
        async def start(self):
            try:
                await super().start()
            except RuntimeError as exc:  # sbatch exited non-zero
                ledger.refusals.append(slurm_error_line(str(exc).split("stderr:", 1)[-1]))
                await ProcessInterface.start(self)  # a job that never ran: closing it cancels nothing
            else:
                ledger.job_ids.append(str(self.job_id))

    return LedgerSLURMJob


class SlurmWorkers:
    """Dask workers as Slurm jobs: submitted on the first use of :attr:`address`, cancelled by
    :meth:`close` (see the module docstring for the guarantees).

    Parameters
    ----------
    settings : the ``dask`` block of meta_config (:class:`pace_worker.config.DaskSettings`) with ``cluster: slurm``
    """

    def __init__(self, settings) -> None:
        self.settings = settings
        self.ledger = _Ledger()
        self._cluster = None
        self._address: Optional[str] = None

    @property
    def started(self) -> bool:
        return self._address is not None

    @property
    def address(self) -> str:
        """The scheduler's address once a worker has connected to it (submits the jobs on first use)."""
        if self._address is None:
            self._address = self._start()
        return self._address

    def _start(self) -> str:
        check_slurm_reachable()
        try:
            return self._submit_and_wait()
        except BaseException:
            self.close()
            raise

    def _submit_and_wait(self) -> str:
        settings = self.settings
        self._cluster = self._make_cluster()
        check_job_accepted(self._cluster.job_script(), settings)
        processes = settings.processes or settings.cores
        log.debug("submitting %d Slurm job(s) (%s), %d Dask worker process(es) each; scheduler at %s",
                 settings.jobs, _what_was_asked(settings), processes, self._cluster.scheduler_address)
        begin = time.monotonic()
        self._cluster.scale(jobs=settings.jobs)
        self._wait_for_a_worker(begin)
        log.info("first Dask worker connected %.1f s after submission (Slurm jobs %s)", time.monotonic() - begin,
                 ", ".join(self.ledger.job_ids))
        return self._cluster.scheduler_address

    def _make_cluster(self):
        SLURMCluster = _import_slurm_cluster()
        s = self.settings
        environment = {**CLUSTER_ENVIRONMENT, "PACE_WORKER_NO_PROGRESS": "1"}
        options = {k: v for k, v in s.scheduler_options.model_dump().items() if v is not None}
        options["dashboard"] = s.scheduler_options.dashboard_address is not None
        # the scheduler's HTTP server (health, metrics) listens even without a dashboard: on any free
        # port, not on 8787, where another scheduler of this host would make it print a warning
        options.setdefault("dashboard_address", ":0")
        # no worker dashboards unless asked for (a web server per worker process that nobody reads)
        worker_args = list(s.worker_extra_args)
        if not any(a.startswith("--dashboard") or a == "--no-dashboard" for a in worker_args):
            worker_args.append("--no-dashboard")
        try:
            return SLURMCluster(
                job_cls=_job_class(self.ledger), cores=s.cores, memory=s.memory, processes=s.processes or s.cores,
                walltime=s.walltime, queue=s.queue, account=s.account, job_name=s.job_name,
                job_script_prologue=[f"export {k}={v}" for k, v in environment.items()] + list(s.job_script_prologue),
                job_extra_directives=list(s.job_extra_directives), job_directives_skip=list(s.job_directives_skip),
                worker_extra_args=worker_args, interface=s.interface, local_directory=s.local_directory,
                log_directory=str(s.log_directory) if s.log_directory else None, python=s.python,
                death_timeout=s.death_timeout, scheduler_options=options)
        except (ValueError, OSError, RuntimeError) as exc:  # e.g. no such network interface, port taken
            raise InputError(f"cannot start the Dask scheduler for the Slurm workers ({first_line(exc)}); "
                             "check dask.interface and dask.scheduler_options in meta_config")

    def _n_workers(self) -> int:
        return len(self._cluster.scheduler_info.get("workers", {}))

    def _wait_for_a_worker(self, begin: float) -> None:
        s = self.settings
        next_report = WAIT_REPORT_S
        while True:
            if self.ledger.refusals:
                raise InputError(f"Slurm refused a Dask worker job ({self.ledger.refusals[0]}): asked for "
                                 f"{_what_was_asked(s)}; change the dask block of meta_config")
            if self._n_workers():
                return
            submitted = list(self.ledger.job_ids)
            states = job_states(submitted)
            if len(submitted) == s.jobs and not states:
                where = f" in {s.log_directory}" if s.log_directory else " (slurm-JOBID.out in the folder it ran from)"
                raise InputError(f"the Slurm job(s) {', '.join(submitted)} ended before a Dask worker connected; "
                                 f"see the job log{where} (e.g. a wrong dask.python or job_script_prologue)")
            waited = time.monotonic() - begin
            if waited >= s.connect_timeout_s:
                raise InputError(f"no Dask worker connected within dask.connect_timeout_s = {s.connect_timeout_s:g} s"
                                 f" ({_describe(states, submitted)}); {_advice(states)}")
            if waited >= next_report:  # a queue can take long: say what Slurm says, now and then
                log.info("waiting %.0f s of dask.connect_timeout_s = %g s for a Dask worker: %s", waited,
                         s.connect_timeout_s, _describe(states, submitted))
                next_report += WAIT_REPORT_S
            time.sleep(min(0.5, s.connect_timeout_s - waited))

    def close(self) -> None:
        """Cancel every job submitted (and wait until squeue no longer lists them), stop the scheduler."""
        if self._cluster is None:
            return
        with signals_held():
            cluster, self._cluster = self._cluster, None
            try:
                cluster.close(timeout=30)
            except Exception as exc:  # the jobs are cancelled below in any case
                log.debug("closing the Dask cluster: %s", first_line(exc))
            left = cancel_jobs(self.ledger.job_ids)
            if left:
                log.warning("Slurm still lists job(s) %s %g s after scancel; check them with squeue",
                            ", ".join(left), CANCEL_WAIT_S)


def _describe(states: dict, submitted: list[str]) -> str:
    if not submitted:
        return "no job was submitted yet"
    parts = []
    for job_id in submitted:
        state, reason = states.get(job_id, ("ended", ""))
        parts.append(f"job {job_id} {state}" + (f", reason {reason}" if reason and reason != "None" else ""))
    return "; ".join(parts)


def _advice(states: dict) -> str:
    if any(state == "PENDING" for state, _ in states.values()):
        return ("the cluster has no room for the jobs now: ask for less (dask.cores, dask.memory, dask.queue) or "
                "wait longer (dask.connect_timeout_s); the jobs were cancelled")
    return ("the jobs ran but no worker reached the scheduler: check dask.interface / dask.scheduler_options and "
            "the job logs (dask.log_directory); the jobs were cancelled")


@contextlib.contextmanager
def workers_for(meta) -> Iterator[Optional[SlurmWorkers]]:
    """Around one command: with ``dask.cluster: slurm`` (and no scheduler address) its chunks run on
    Dask workers started as Slurm jobs when first needed, all cancelled when the block ends; otherwise
    nothing changes.

        with workers_for(meta):
            result = sample(SampleRequest(..., meta=meta))
    """
    if meta.dask.cluster != "slurm" or meta.dask.scheduler_address:
        yield None
        return
    workers = SlurmWorkers(meta.dask)
    meta._dask_cluster = workers
    try:
        yield workers
    finally:
        meta._dask_cluster = None
        workers.close()
