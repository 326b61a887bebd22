"""One place that runs per-structure work in chunks on worker processes (validate, sample, …).

:class:`ChunkExecutor` splits a sequence into chunks of ``chunk_size`` items and maps a
function over them on ``workers`` processes. Each worker runs ``initializer(*initargs)`` once
(e.g. loads the potential), so heavy objects travel to a worker once, not per chunk. Results
come back in input order whatever the number of workers or the chunk size, so results do not
depend on either. With ``workers=1`` everything runs in the calling process.

A progress bar follows the chunks on a terminal (see :mod:`pace_worker.progress`).
"""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def chunked(items: Sequence, chunk_size: int) -> list[Sequence]:
    return [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]


class ChunkExecutor:
    """Map a function over chunks of a sequence on worker processes, in order.

    Parameters
    ----------
    workers : number of processes (``None``: all CPUs this process may use)
    chunk_size : items per task
    show_progress : ``None`` shows a bar only on a terminal
    """

    def __init__(self, workers: Optional[int] = None, chunk_size: int = 16, show_progress: Optional[bool] = None):
        self.workers = workers
        self.chunk_size = chunk_size
        self.show_progress = show_progress

    def map(self, function: Callable[[Sequence], Any], items: Sequence, initializer: Optional[Callable] = None,
            initargs: tuple = (), description: str = "working") -> Iterator[Any]:
        """Yield ``function(chunk)`` for each chunk of ``items``, in order."""
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        chunks = chunked(items, self.chunk_size)
        for _, result in self.map_chunks(function, chunks, initializer, initargs, description, total=len(items),
                                         n_chunks=len(chunks)):
            yield result

    def map_chunks(self, function: Callable[[Sequence], Any], chunks: Iterable[Sequence],
                   initializer: Optional[Callable] = None, initargs: tuple = (), description: str = "working",
                   total: Optional[int] = None, n_chunks: Optional[int] = None) -> Iterator[tuple[Sequence, Any]]:
        """Like :meth:`map` for chunks that are produced lazily (e.g. read from a file as they are
        needed): yields ``(chunk, function(chunk))`` in order; at most two chunks per worker are
        held at once."""
        from pace_worker.progress import Progress

        workers = self.workers or default_workers()
        if n_chunks is not None:
            workers = min(workers, max(1, n_chunks))
        with Progress(description, total=total, enabled=self.show_progress) as bar:
            done = 0
            for chunk, result in self._results(function, chunks, workers, initializer, initargs):
                done += len(chunk)
                bar.update(done)
                yield chunk, result

    @staticmethod
    def _results(function, chunks, workers, initializer, initargs) -> Iterable[tuple[Sequence, Any]]:
        if workers == 1:
            if initializer is not None:
                initializer(*initargs)
            for chunk in chunks:
                yield chunk, function(chunk)
            return
        context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer,
                                 initargs=initargs) as pool:
            # at most 2 chunks per worker in flight: client memory stays bounded, workers stay busy
            pending: deque = deque()
            for chunk in chunks:
                pending.append((chunk, pool.submit(function, chunk)))
                if len(pending) >= 2 * workers:
                    chunk_done, future = pending.popleft()
                    yield chunk_done, future.result()
            while pending:
                chunk_done, future = pending.popleft()
                yield chunk_done, future.result()
