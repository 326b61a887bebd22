"""One function call in a forked child process, for work that may turn out not to be needed
(a speculative step of a search): the child sees this process's memory as it was at the fork,
so big arguments are not copied or pickled; only the result comes back (pickled, through a pipe).

>>> call = ForkedCall(sum, [1, 2, 3])
>>> call.result()
6

The child ignores SIGTERM / SIGINT and dies with this process
(:func:`pace_worker.interrupts.quiet_worker`), like the executor's workers, and runs BLAS and
OpenMP on one thread (threadpoolctl): it shares the CPUs with this process, and an OpenMP thread
pool this process started does not survive the fork (libgomp would wait for its threads for
ever; with one thread it starts none). :meth:`ForkedCall.cancel`
kills it; use the call as a context manager so a call whose result is not wanted, or a search
stopped by an error or a signal, leaves no process behind. Where ``fork`` is not available
(not Linux/macOS) or this process may not start one (a daemonic process, such as a pool's
worker), or the child fails or dies, :meth:`ForkedCall.result` raises
:class:`ForkedCallFailed` and the caller does the work itself.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import traceback
from typing import Any, Callable, Iterator

from pace_worker import interrupts


class ForkedCallFailed(RuntimeError):
    """The child could not start, raised, or died before it sent its result."""


def _run_in_child(send, parent_pid: int, function: Callable, args: tuple) -> None:
    interrupts.quiet_worker(parent_pid)
    try:
        _one_thread()
        outcome = (True, function(*args))
    except BaseException:  # noqa: BLE001 - reported to the parent, which decides
        outcome = (False, traceback.format_exc(limit=3))
    try:
        send.send(outcome)
    finally:
        send.close()


def _threadpool_limits():
    """threadpoolctl's ``threadpool_limits`` (scikit-learn's dependency), or None without it
    (then nothing here started BLAS or OpenMP threads either)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits


def _one_thread() -> None:
    """BLAS and OpenMP on one thread in this (forked) process, for as long as it lives."""
    limits = _threadpool_limits()
    if limits is not None:
        limits(1)


@contextlib.contextmanager
def one_blas_thread(active: bool = True) -> Iterator[None]:
    """BLAS and OpenMP on one thread in this process inside the block (if ``active``): while a
    forked child works beside it, so the two do not compete for the cores with more threads."""
    limits = _threadpool_limits() if active else None
    if limits is None:
        yield
        return
    with limits(1):
        yield


class ForkedCall:
    """``function(*args)`` started now in a forked child process (``start=False``: not started,
    as where no fork is possible: :meth:`result` raises :class:`ForkedCallFailed`)."""

    def __init__(self, function: Callable, *args: Any, start: bool = True):
        self._process = None
        self._receive = None
        if not start or "fork" not in multiprocessing.get_all_start_methods() \
                or multiprocessing.current_process().daemon:
            return  # not wanted, no fork here, or a daemonic process (a pool's worker), which may not have children
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_run_in_child, args=(send, os.getpid(), function, args), daemon=True)
        try:
            self._process.start()
        except OSError:  # no memory or process slots left for a fork: the caller computes it
            self._process = None
            self._receive.close()
        finally:
            send.close()

    @property
    def started(self) -> bool:
        """Whether a child process computes the call (until its result is taken or it is cancelled)."""
        return self._process is not None

    def result(self) -> Any:
        """The function's return value (waits for it)."""
        if self._process is None:
            raise ForkedCallFailed("no forked process")
        try:
            ok, value = self._receive.recv()
        except (EOFError, OSError) as exc:
            raise ForkedCallFailed(f"the forked process ended without a result (exit code {self._process.exitcode})") \
                from exc
        finally:
            self.cancel()
        if not ok:
            raise ForkedCallFailed(value)
        return value

    def cancel(self) -> None:
        """Kill the child if it still runs (its result is not wanted) and release it."""
        if self._process is None:
            return
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._process.close()
        self._receive.close()
        self._process = None

    def __enter__(self) -> "ForkedCall":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()
