"""Writing outputs so that a reader never sees a half-written file.

Every output is written under a temporary name in its final folder and renamed into place
(``os.replace`` is atomic on POSIX within one file system). A group of outputs that belong
together (a potential, its .yace and its active set) is staged completely before the first
rename, so a failure while staging leaves every previous output untouched.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Mapping, Optional

from pace_worker import interrupts


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
    import numpy as np

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
    import numpy as np

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

    def __exit__(self, *exc) -> None:
        for tmp in self.staged.values():
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
