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

import multiprocessing
import os
import traceback
from typing import Any, Callable

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


def _one_thread() -> None:
    """BLAS and OpenMP on one thread in this (forked) process, for as long as it lives."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it nothing here started OpenMP threads either
        return
    threadpool_limits(1)


class ForkedCall:
    """``function(*args)`` started now in a forked child process."""

    def __init__(self, function: Callable, *args: Any):
        self._process = None
        self._receive = None
        if "fork" not in multiprocessing.get_all_start_methods() or multiprocessing.current_process().daemon:
            return  # no fork here, or this is a daemonic process (a pool's worker), which may not have children
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
