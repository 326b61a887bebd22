"""The Dask worker plugin of :mod:`pace_worker.executor` (a module of its own: it imports
``distributed``, which local runs never need)."""
from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin


class InitializerPlugin(WorkerPlugin):
    """Runs ``initializer(*initargs)`` once on every worker (also on workers that join later)."""

    def __init__(self, initializer, initargs: tuple):
        self.initializer = initializer
        self.initargs = initargs

    def setup(self, worker=None):
        from pace_worker.executor import PROCESS_LOCK

        with PROCESS_LOCK:
            self.initializer(*self.initargs)
