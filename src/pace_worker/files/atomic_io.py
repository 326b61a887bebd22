"""Writing outputs so that a reader never sees a half-written file.

Every output is written under a temporary name in its final folder and renamed into place
(``os.replace`` is atomic on POSIX within one file system). A group of outputs that belong
together (a potential, its .yace and its active set) is staged completely before the first
rename, so a failure while staging leaves every previous output untouched. A file system that
fills up meanwhile (ENOSPC, a quota) is :class:`~pace_worker.errors.DiskFull`, one line naming
the folder (:func:`disk_full_is_one_line`); the temporary files are removed first.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Mapping, Optional

import numpy as np

from pace_worker import interrupts
from pace_worker.errors import DiskFull

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"


def disk_full_error(exc: OSError, folder) -> DiskFull:
    """The one line for a full file system met while writing into ``folder``."""
    folder = Path(folder)
    what = f" while writing '{Path(exc.filename).name}'" if getattr(exc, "filename", None) else ""
    return DiskFull(f"the file system of '{folder}' is full ({os.strerror(exc.errno)}{what}; {_free_space(folder)} "
                    "free now); free space there or write elsewhere, and rerun. Earlier outputs are as they were")


@contextlib.contextmanager
def disk_full_is_one_line(folder) -> Iterator[None]:
    """A full file system (ENOSPC, EDQUOT) inside the block becomes :class:`DiskFull` naming ``folder``."""
    try:
        yield
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(exc, folder) from None
        raise


def companion_path(output, suffix: str) -> Path:
    """A file that goes with an output, next to it: ``<output without extension><suffix>``
    (``sel.xyz`` + ``_report.json`` → ``sel_report.json``)."""
    output = Path(output)
    return output.with_name(output.with_suffix("").name + suffix)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with disk_full_is_one_line(path.parent):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path, data) -> None:
    with atomic_output(path) as tmp:
        write_json(tmp, data)


def write_json(path, data) -> None:
    """Strict JSON: a non-finite number (NaN, ±inf: a broken structure's error, say) is written as
    null, and the top-level ``non_finite_as_null`` lists where (no ``NaN``/``Infinity`` tokens,
    which JSON does not have)."""
    where: list[str] = []
    clean = _finite(data, "", where)
    if where and isinstance(clean, dict):
        clean["non_finite_as_null"] = where
    Path(path).write_text(json.dumps(clean, indent=2, sort_keys=False, allow_nan=False) + "\n")


def _finite(value, path: str, where: list):
    if isinstance(value, dict):
        return {str(k): _finite(v, f"{path}.{k}" if path else str(k), where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{path}[{i}]", where) for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist(), path, where)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            where.append(path)
            return None
        return float(value)
    if value is None or isinstance(value, str):
        return value
    return _json_default(value)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _backup_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.bak-{os.getpid()}")


def publish(files: Mapping[Path, Optional[Path]], move: bool = False) -> None:
    """Move a group of finished files into place, all or none: ``{destination: source}``.

    A source of ``None`` removes the destination (a stale file that must not outlive the group,
    such as an active set of an older potential). All sources are first copied (or, with
    ``move``, taken as they are: temporary files next to their destinations) to temporary names
    next to their destinations; then every existing destination is kept under a backup name (a
    hard link) and the new files are renamed into place one after the other. If anything fails
    or the process is interrupted (SIGTERM, Ctrl-C) before the last rename, the previous files
    are put back and the new ones removed.
    """
    interrupts.check()  # a stopped command publishes nothing, even if its signal's exception was lost
    try:
        _publish(files, move)
    except OSError as exc:
        if exc.errno in DISK_FULL:  # rolled back already
            raise disk_full_error(exc, Path(next(iter(files))).parent) from None
        raise


def _publish(files: Mapping[Path, Optional[Path]], move: bool) -> None:
    staged: list[tuple[Path, Path]] = []
    backups: dict[Path, Path] = {}
    changed: list[Path] = []
    try:
        for dest, src in files.items():
            if src is None:
                continue
            dest = Path(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if move:
                staged.append((Path(src), dest))
                continue
            tmp = _temp_name(dest)
            staged.append((tmp, dest))
            shutil.copyfile(src, tmp)
        removals = [Path(dest) for dest, src in files.items() if src is None and Path(dest).exists()]
        for dest in [d for _, d in staged] + removals:
            if dest.exists() and dest not in backups:
                backup = _backup_name(dest)
                backup.unlink(missing_ok=True)
                try:
                    os.link(dest, backup)
                except OSError:  # no hard links here: a copy keeps the previous file as well
                    shutil.copy2(dest, backup)
                backups[dest] = backup
        for tmp, dest in staged:
            changed.append(dest)
            os.replace(tmp, dest)
        for dest in removals:
            changed.append(dest)
            dest.unlink(missing_ok=True)
    except BaseException:
        for dest in reversed(changed):  # roll back: the previous set, exactly as it was
            with contextlib.suppress(OSError):
                if dest in backups:
                    backup = backups.pop(dest)
                    os.replace(backup, dest)
                    backup.unlink(missing_ok=True)  # rename of two links to one file does nothing
                else:
                    dest.unlink(missing_ok=True)
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise
    finally:
        for backup in backups.values():
            with contextlib.suppress(OSError):
                backup.unlink(missing_ok=True)


class OutputGroup:
    """The outputs of one command, staged under temporary names and published together.

    ``group.stage(dest)`` gives the temporary path to write ``dest`` to; :meth:`publish` renames
    them all into place (see :func:`publish`: all or none, also on SIGTERM); leaving the
    ``with`` block without publishing removes whatever was staged.
    """

    def __init__(self) -> None:
        self.staged: dict[Path, Path] = {}

    def __enter__(self) -> "OutputGroup":
        return self

    def stage(self, dest) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.staged[dest] = _temp_name(dest)
        return self.staged[dest]

    def publish(self) -> None:
        publish(dict(self.staged), move=True)
        self.staged.clear()

    def __exit__(self, exc_type, exc, tb) -> None:
        for tmp in self.staged.values():
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            folder = next(iter(self.staged), None)
            raise disk_full_error(exc, folder.parent if folder is not None else ".") from None
