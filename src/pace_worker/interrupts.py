"""SIGTERM and SIGINT: a command stops within seconds, its worker processes with it, and no
output is left half-changed.

The main process (:func:`install`, called by the CLI) turns SIGTERM into :class:`Terminated` and
SIGINT into ``KeyboardInterrupt``, raised in its main thread: the command unwinds, staged
outputs are removed, a publish that had begun is rolled back (:mod:`pace_worker.files.atomic_io`),
the fit process and the worker processes are stopped, and the CLI prints one line (exit 143 /
130). That is what ``docker stop``, Slurm's time limit and an orchestrator's cancel send, to the
whole process group.

Worker processes forked from the main process must not run its handler: raised inside the
pool's machinery it prints "Exception ignored" tracebacks and can leave the command running.
:func:`quiet_worker` makes a worker ignore both signals first thing (the main process stops its
workers, see :mod:`pace_worker.parallel.executor`) and ties its life to its parent's; until it
has run, the inherited handler ignores them too (it knows the main process by its pid).

An exception raised at an arbitrary point of the pool's own bookkeeping (starting a worker,
queueing a chunk, shutting down) leaves it half-done, and it fails again at exit with tracebacks
of its own; such steps run inside :func:`deferred`, where a signal is recorded and raised when
the step is complete. A handler's exception can also be lost: raised inside a ``__del__`` or a
callback, Python reports it as "Exception ignored" and goes on. So every signal is recorded;
:func:`check` raises it again where work continues (each finished chunk, the start of a
publish, the end of a command), and Python's report of such a lost exception is silenced.
A library's event loop that reports its own callbacks' errors through a logger (Dask's client:
Ctrl-C inside its ``sync`` schedules a ``cancel`` that can fail with a NameError of its own) is
quieted after a signal with :func:`quiet_logger_after_a_signal`: the stop is the one line. For the
same reason Python's warnings are ignored once a signal came: they come from the unwinding (Ctrl-C
inside Dask's ``sync`` can leave the coroutine it was about to run never awaited, and Python reports
that as a RuntimeWarning with a "tracemalloc" hint when the coroutine is collected).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import warnings
from typing import Iterator, Optional


class Terminated(BaseException):
    """SIGTERM (how orchestrators stop a job): unwinds like Ctrl-C, so the fit process is stopped
    and no output is touched."""


_main_pid: Optional[int] = None
_received: list[int] = []
_deferring = 0  # > 0 inside deferred(): a signal is recorded, raised at its end


def _exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _handler(signum, frame) -> None:
    if os.getpid() != _main_pid:  # a forked worker before quiet_worker(): its parent stops it
        return
    _received.append(signum)
    warnings.simplefilter("ignore")  # the unwinding's warnings: the command's one line is the report
    if not _deferring:
        raise _exception(signum)


def _unraisable(unraisable) -> None:
    """A lost exception of our own handler is not reported (:func:`check` raises it again)."""
    if _received and isinstance(unraisable.exc_value, (Terminated, KeyboardInterrupt)):
        return
    sys.__unraisablehook__(unraisable)


def install() -> None:
    """In the main process: SIGTERM raises :class:`Terminated`, SIGINT ``KeyboardInterrupt``."""
    global _main_pid
    _main_pid = os.getpid()
    _received.clear()
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    sys.unraisablehook = _unraisable


def received() -> Optional[int]:
    """The first signal the main process received, if any."""
    return _received[0] if _received else None


def check() -> None:
    """Raise the exception of a signal already received (in case the first one was lost)."""
    if _received:
        raise _exception(_received[0])


def _before_a_signal(record: logging.LogRecord) -> bool:
    return not _received


def quiet_logger_after_a_signal(name: str) -> None:
    """The records of logger ``name`` (not its children) are dropped once a signal was received."""
    logger = logging.getLogger(name)
    if _before_a_signal not in logger.filters:
        logger.addFilter(_before_a_signal)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A step that a signal must not cut in two: the signal's exception is raised after it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring:
        check()


def quiet_worker(parent_pid: Optional[int] = None) -> None:
    """In a worker process: SIGTERM and SIGINT are ignored (the main process, which gets them
    too, stops its workers between chunks), and the worker is killed when its parent dies
    (Linux), so no worker outlives a killed command. ``parent_pid``: the process that started the
    worker; a worker whose parent is no longer that one (it died before the kill was arranged)
    ends at once. (Not "the parent is PID 1": in a container the command itself is PID 1.)"""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before the line above
            os._exit(1)
