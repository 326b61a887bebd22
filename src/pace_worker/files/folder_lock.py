"""One ``train`` per output folder at a time.

:func:`exclusive_folder` holds an advisory lock (``fcntl.flock``) on ``.pace-worker.lock`` in the
folder for the whole run; the file says who holds it. A second run fails at once with one line
naming the first. The kernel releases the lock when its holder dies, however it dies, so a lock
file left by a killed run is stale by construction: the next run takes it over (and says so).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from pace_worker.errors import InputError

log = logging.getLogger(__name__)

LOCK_NAME = ".pace-worker.lock"


@contextlib.contextmanager
def exclusive_folder(folder: Path, command: str = "train") -> Iterator[None]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 400, 0).decode(errors="replace").strip() or "another process"
            raise InputError(f"output folder '{folder}' is in use by another {command} ({holder}); wait for it to "
                             "finish, or give another --output-dir")
        previous = os.pread(fd, 400, 0).decode(errors="replace").strip()
        if previous:
            log.info("taking over the lock of %s, left by a run that is gone (%s)", folder, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{command} pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves an empty (free) lock file
    finally:
        os.close(fd)
