"""One place that runs per-structure work in chunks on worker processes (validate, sample,
direct_sample), locally or on a Dask cluster.

:class:`ChunkExecutor` splits a sequence into chunks of ``chunk_size`` items and maps a
function over them. Each worker runs ``initializer(*initargs)`` once (e.g. loads the potential
from its path), so heavy objects travel to a worker once, not per chunk. Results come back in
input order whatever the number of workers, the chunk size or where they ran, so results do
not depend on any of these. A few chunks per worker are in flight — 2 per local process, 4 tasks
of up to ``chunks_per_task`` chunks per Dask worker thread (the scheduler holds the ones not yet
running and hands them to whichever worker is free, so no worker waits for another's slow
task) — so memory on the client stays bounded however long the input is.

Where the chunks run
--------------------
* default: ``workers`` local processes (forked; ``workers=1`` runs in the calling process);
* ``scheduler="tcp://host:8786"`` (``--scheduler`` or meta_config ``dask.scheduler_address``):
  the workers of an existing Dask cluster (``dask scheduler`` + ``dask worker``, or
  dask-jobqueue on Slurm/PBS); or a cluster started on demand (meta_config ``dask.cluster:
  slurm``, :mod:`pace_worker.parallel.slurm_cluster`), whose ``address`` starts it when the
  first chunks need it. Each task runs the initializer before its chunk; initializers
  load by path and cache per process (a no-op after the first chunk of a worker), so the
  potential is read once per worker and a worker that joins or dies at any moment needs no
  special handling (Dask reruns a dead worker's chunks elsewhere; the result is the same).
  Chunks that name a file (byte ranges of a pool) and the potential are read by path, so the
  workers need the same file system paths. A Dask task costs far more overhead than a local
  chunk (README "Scale-out" has the measurements; ``bench/scaling.py`` repeats them), so each
  task carries up to ``chunks_per_task`` consecutive chunks (meta_config
  ``dask.chunks_per_task``, default 8), fewer towards the end of a run so the workers finish
  together; results are still per chunk and in order. Workers with several threads run one
  chunk at a time per process (pyace objects are shared per process); start them with
  ``--nthreads 1 --nworkers N``. How many tasks are in flight follows the worker threads the
  scheduler has at the moment (Slurm jobs start one by one); when no worker is left for
  ``connect_timeout_s`` (all died, or their jobs ended) the run stops with one line.

Stopping
--------
On SIGTERM / SIGINT (see :mod:`pace_worker.interrupts`), or any error while results are
consumed, the chunks not yet started are cancelled, running ones get a few seconds to finish and
local worker processes end, so a command stops within seconds; Dask tasks of the run are
cancelled on the cluster. Local workers ignore SIGTERM / SIGINT (the main process stops them,
and they die with it), so a signal to the process group neither prints from them nor cuts one
in the middle of sending a result. A local worker that dies otherwise (killed for memory, say)
is one clear error.

A progress bar follows the chunks on a terminal (see :mod:`pace_worker.progress`).
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from pace_worker import interrupts
from pace_worker.errors import FitError, InputError, first_line
from pace_worker.progress import Progress

log = logging.getLogger(__name__)

def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def chunked(items: Sequence, chunk_size: int) -> list[Sequence]:
    return [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]


@dataclass(frozen=True)
class _ChunkJob:
    """What the workers run: ``initializer(*initargs)`` once per process, ``function(chunk)`` per chunk."""

    function: Callable[[Sequence], Any]
    initializer: Optional[Callable] = None
    initargs: tuple = ()

    def start(self) -> None:
        if self.initializer is not None:
            self.initializer(*self.initargs)


class ChunkExecutor:
    """Map a function over chunks of a sequence on worker processes, in order.

    Parameters
    ----------
    workers : number of local processes (``None``: all CPUs this process may use); ignored with a scheduler
    chunk_size : items per task
    show_progress : ``None`` shows a bar only on a terminal
    scheduler : address of a Dask scheduler, or a cluster started on demand (an object whose ``address``
        starts it and gives the scheduler's address); ``None``: local processes
    connect_timeout_s : how long to try to reach the scheduler, and to wait while it has no worker
    chunks_per_task : consecutive chunks in one Dask task (amortises Dask's per-task cost)
    """

    def __init__(self, workers: Optional[int] = None, chunk_size: int = 64, show_progress: Optional[bool] = None,
                 scheduler: Union[str, Any, None] = None, connect_timeout_s: float = 15.0, chunks_per_task: int = 8):
        if chunks_per_task < 1:
            raise ValueError(f"chunks_per_task must be >= 1, got {chunks_per_task}")
        self.workers = workers
        self.chunk_size = chunk_size
        self.show_progress = show_progress
        self.scheduler = scheduler
        self.connect_timeout_s = connect_timeout_s
        self.chunks_per_task = chunks_per_task

    @classmethod
    def from_meta(cls, meta, show_progress: Optional[bool] = None) -> "ChunkExecutor":
        """The executor meta_config asks for (workers, chunk_size, dask.scheduler_address, the
        command's Slurm workers with dask.cluster: slurm)."""
        scheduler = meta.dask.scheduler_address or meta.dask_cluster
        if meta.dask.cluster and scheduler is None:
            log.info("dask.cluster: %s starts workers for sample, direct_sample and validate from the command line "
                     "(pace_worker.parallel.slurm_cluster.workers_for); these chunks run on local processes",
                     meta.dask.cluster)
        return cls(meta.workers, meta.chunk_size, show_progress, scheduler,
                   meta.dask.connect_timeout_s, meta.dask.chunks_per_task)

    @property
    def scheduler_address(self) -> Optional[str]:
        """The address of the Dask scheduler the chunks run on (``None``: local processes, or an
        on-demand cluster not started yet)."""
        if self.scheduler is None or isinstance(self.scheduler, str):
            return self.scheduler
        return self.scheduler.address if self.scheduler.started else None

    def runs_elsewhere(self, total: Optional[int] = None) -> bool:
        """Whether :meth:`map_chunks` over ``total`` items runs them outside this process (on a
        Dask cluster, or on more than one local worker process), leaving it free meanwhile."""
        return bool(self.scheduler) or self._local_workers(total) > 1

    def _local_workers(self, total: Optional[int]) -> int:
        """Local worker processes for ``total`` items: ``workers`` (default all CPUs), at most one
        per chunk."""
        workers = self.workers or default_workers()
        return workers if total is None else min(workers, max(1, -(-total // self.chunk_size)))

    def map(self, function: Callable[[Sequence], Any], items: Sequence, initializer: Optional[Callable] = None,
            initargs: tuple = (), description: str = "working") -> Iterator[Any]:
        """Yield ``function(chunk)`` for each chunk of ``items``, in order."""
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        for _, result in self.map_chunks(function, chunked(items, self.chunk_size), initializer, initargs,
                                         description, total=len(items)):
            yield result

    def map_chunks(self, function: Callable[[Sequence], Any], chunks: Iterable[Sequence],
                   initializer: Optional[Callable] = None, initargs: tuple = (), description: str = "working",
                   total: Optional[int] = None) -> Iterator[tuple[Sequence, Any]]:
        """Like :meth:`map` for chunks that are produced lazily (e.g. read from a file as they are
        needed): yields ``(chunk, function(chunk))`` in order; only a few chunks per worker are
        held at once. ``total``: the items in all chunks (chunks of ``chunk_size`` items, the last
        one shorter), if known."""
        job = _ChunkJob(function, initializer, initargs)
        if self.scheduler:
            address = self.scheduler if isinstance(self.scheduler, str) else self.scheduler.address
            n_chunks = None if total is None else -(-total // self.chunk_size)
            results = _dask_results(address, self.connect_timeout_s, job, chunks, self.chunks_per_task, n_chunks)
        else:
            results = _local_results(job, chunks, self._local_workers(total))
        with Progress(description, total=total, enabled=self.show_progress) as bar:
            done = 0
            for chunk, result in results:
                done += len(chunk)
                bar.update(done)
                yield chunk, result


def _in_order(submit: Callable, chunks: Iterable[Sequence], in_flight: Union[int, Callable[[], int]],
              result: Callable[[Any], Any] = lambda future: future.result(),
              cancel: Optional[Callable[[list], None]] = None) -> Iterator[tuple[Sequence, Any]]:
    """Submit chunks (``submit(chunk)`` → a future), at most ``in_flight`` at once (a number, or a
    function asked before each submission), and yield ``(chunk, result(future))`` in submission
    order. If this stops early (an error, a signal, the consumer leaving), ``cancel`` gets the
    futures still pending."""
    limit = in_flight if callable(in_flight) else (lambda: in_flight)
    pending: deque = deque()
    try:
        for chunk in chunks:
            pending.append((chunk, submit(chunk)))
            while len(pending) >= limit():
                chunk_done, future = pending.popleft()
                yield chunk_done, result(future)
                interrupts.check()
        while pending:
            chunk_done, future = pending.popleft()
            yield chunk_done, result(future)
            interrupts.check()
    except BaseException:
        if cancel is not None and pending:
            cancel([future for _, future in pending])
        raise


def _start_worker(job: _ChunkJob, parent_pid: int) -> None:
    """First thing in a local worker process: it ignores SIGTERM / SIGINT (the main process stops
    it) and dies with ``parent_pid``, then the job's initializer."""
    interrupts.quiet_worker(parent_pid)
    job.start()


STOP_GRACE_S = 3.0  # how long a stopping command lets running chunks finish before it kills their workers


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: chunks not started are cancelled, running ones get ``STOP_GRACE_S`` to
    finish (workers ignore SIGTERM / SIGINT, so a signal to the process group does not cut one in
    the middle of sending a result); then its workers are killed. A second signal meanwhile waits."""
    with interrupts.deferred():
        _stop_pool(pool)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    # the pool has no public handle on its processes and thread before Python 3.14
    thread = getattr(pool, "_executor_manager_thread", None)
    processes = list((getattr(pool, "_processes", None) or {}).values())
    results = getattr(pool, "_result_queue", None)
    # a chunk still being written to workers that are gone blocks the queue's feeder thread for
    # ever; the pool's thread (which the interpreter joins at exit) would wait for it
    calls = getattr(pool, "_call_queue", None)
    if calls is not None:
        calls.cancel_join_thread()
    pool.shutdown(wait=False, cancel_futures=True)
    if thread is not None:
        thread.join(STOP_GRACE_S)
    if not any(p.is_alive() for p in processes) and not (thread is not None and thread.is_alive()):
        return
    for process in processes:
        process.kill()
        process.join(timeout=5)
    # a worker killed while sending a result leaves half a message, and the pool's thread (which
    # the interpreter joins at exit) would wait for the rest forever; with no writer left it reads
    # the end of the pipe instead and ends
    writer = getattr(results, "_writer", None)
    if writer is not None:
        writer.close()
    if thread is not None:
        thread.join(STOP_GRACE_S)


def _local_results(job: _ChunkJob, chunks: Iterable[Sequence], workers: int) -> Iterable[tuple[Sequence, Any]]:
    if workers == 1:
        job.start()
        for chunk in chunks:
            yield chunk, job.function(chunk)
            interrupts.check()
        return
    context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    with interrupts.deferred():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                                   initargs=(job, os.getpid()))

    def submit(chunk):
        with interrupts.deferred():  # starts worker processes: not to be cut in two
            return pool.submit(job.function, chunk)

    try:
        yield from _in_order(submit, chunks, 2 * workers)
    except BrokenProcessPool as exc:
        _stop_workers(pool)
        interrupts.check()  # the workers ended with the process group's SIGTERM / SIGINT
        raise FitError(f"a worker process died while working ({first_line(exc)}); it may have run out of "
                       "memory: give fewer meta_config workers or a smaller chunk_size, and rerun") from None
    except BaseException:
        _stop_workers(pool)
        raise
    with interrupts.deferred():
        pool.shutdown(wait=True)


# ----------------------------------------------------------------------------- Dask
_PROCESS_LOCK = threading.Lock()


def _run_on_worker(job: _ChunkJob, chunks: list) -> list:
    """A few chunks on a Dask worker: the initializer first (it loads by path and caches per
    process, so it reads the potential once per worker), one task at a time per process (the
    initializer's objects are per process). No broadcast to all workers is needed, so a worker
    that dies at any moment costs only a rerun of its tasks elsewhere."""
    with _PROCESS_LOCK:
        job.start()
        return [job.function(chunk) for chunk in chunks]


def _groups(chunks: Iterable, largest: int, n_chunks: Optional[int],
            threads: Union[int, Callable[[], int]]) -> Iterator[list]:
    """Consecutive chunks grouped into tasks of up to ``largest`` chunks. With the number of
    chunks known, groups shrink towards the end (half the remaining chunks per worker thread, at
    least 1: "guided" scheduling), so no worker idles through a long last task while the others
    are done. ``threads``: the worker threads, or a function giving their number now."""
    count = threads if callable(threads) else (lambda: threads)
    iterator = iter(chunks)
    remaining = n_chunks
    while True:
        size = largest if remaining is None else max(1, min(largest, remaining // (2 * count())))
        group = list(itertools.islice(iterator, size))
        if not group:
            return
        if remaining is not None:
            remaining -= len(group)
        yield group


def connect(scheduler: str, timeout_s: float = 15.0):
    """A Dask client of the scheduler at ``scheduler``, or one clear error."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler needs Dask distributed: pip install 'dask[distributed]'")
    # the client's event loop reports its callbacks' errors there (after a Ctrl-C: distributed's
    # own NameError in sync's cancel); after a signal the command's one line is the report
    for name in ("tornado.application", "asyncio"):
        interrupts.quiet_logger_after_a_signal(name)
    try:
        return Client(scheduler, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at '{scheduler}' within {timeout_s:g} s "
                         f"({first_line(exc)}); start one (`dask scheduler`, `dask worker {scheduler}`) "
                         "or leave out --scheduler / dask.scheduler_address to run on local processes")


class _WorkerThreads:
    """The worker threads a Dask scheduler has now (asked at most once a second: workers join as
    their jobs start and leave when they die), and waiting for results while some are left."""

    def __init__(self, client, scheduler: str, timeout_s: float):
        self.client = client
        self.scheduler = scheduler
        self.timeout_s = timeout_s
        self._count = 0
        self._asked = -1.0

    def count(self) -> int:
        if time.monotonic() - self._asked >= 1.0:
            self._count = sum(self.client.nthreads().values())
            self._asked = time.monotonic()
        return self._count

    def __call__(self) -> int:
        return max(1, self.count())

    def wait_for_one(self) -> None:
        if self.count():
            return
        try:
            self.client.wait_for_workers(1, timeout=self.timeout_s)
        except TimeoutError:
            raise InputError(f"the Dask scheduler at '{self.scheduler}' has no workers (waited {self.timeout_s:g} s); "
                             f"start some with `dask worker {self.scheduler} --nthreads 1`")
        self._asked = -1.0

    def result(self, future):
        """``future.result()``; one InputError when the scheduler has had no worker for ``timeout_s``
        (the task would wait forever)."""
        without_workers_since = None
        while True:
            try:
                return future.result(timeout=min(5.0, self.timeout_s))
            except TimeoutError:
                pass
            self._asked = -1.0
            if self.count():
                without_workers_since = None
                continue
            now = time.monotonic()
            without_workers_since = without_workers_since or now
            if now - without_workers_since >= self.timeout_s:
                raise InputError(f"the Dask scheduler at '{self.scheduler}' has had no worker for {self.timeout_s:g} s "
                                 "(dask.connect_timeout_s) with chunks left: its workers died or their jobs ended "
                                 "(Slurm walltime?); outputs left as they were, rerun when workers are back")


def _dask_results(scheduler: str, timeout_s: float, job: _ChunkJob, chunks: Iterable[Sequence], chunks_per_task: int,
                  n_chunks: Optional[int]) -> Iterable[tuple[Sequence, Any]]:
    client = connect(scheduler, timeout_s)
    try:
        threads = _WorkerThreads(client, scheduler, timeout_s)
        threads.wait_for_one()
        groups = _groups(chunks, chunks_per_task, n_chunks, threads)
        def submit(group):
            with interrupts.deferred():
                return client.submit(_run_on_worker, job, group, pure=False)

        tasks = _in_order(submit, groups, lambda: 4 * threads(), threads.result,
                          cancel=lambda futures: _cancel_quietly(client, futures))
        for group, results in tasks:
            yield from zip(group, results)
    finally:
        with interrupts.deferred():
            client.close(timeout=CLOSE_TIMEOUT_S)


CLOSE_TIMEOUT_S = 5  # how long a stopping command waits for the Dask scheduler to take its leave


def _cancel_quietly(client, futures: list) -> None:
    """Cancel a stopped run's tasks on the cluster; a scheduler that is gone is no news here."""
    with interrupts.deferred():
        try:
            client.cancel(futures, asynchronous=False)
        except Exception:  # the run stops anyway; the scheduler forgets the tasks with this client
            pass
