"""Progress bars: rich on a terminal, nothing in logs or pipes."""
from __future__ import annotations

import os
import sys
from typing import Optional


def progress_wanted() -> bool:
    return sys.stderr.isatty() and os.environ.get("PACE_WORKER_NO_PROGRESS", "") in ("", "0")


class Progress:
    """A single progress bar (``with Progress("fitting", total=n) as bar: bar.update(i)``).

    ``enabled=None`` shows it only when stderr is a terminal.
    """

    def __init__(self, description: str, total: Optional[int] = None, enabled: Optional[bool] = None):
        self.description = description
        self.total = total
        self.enabled = progress_wanted() if enabled is None else enabled
        self._progress = None
        self._task = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                          TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                          console=Console(stderr=True), transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, info="")
        return self

    def update(self, completed: int, **info) -> None:
        if self._progress is not None:
            text = " ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
            self._progress.update(self._task, completed=completed, info=text)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
