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
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


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


def publish(files: Mapping[Path, Optional[Path]]) -> None:
    """Move a group of finished files into place: ``{destination: source}``.

    A source of ``None`` removes the destination (a stale file that must not outlive the group,
    such as an active set of an older potential). All sources are first copied to temporary
    names next to their destinations; only then are they renamed, one after the other.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for dest, src in files.items():
            if src is None:
                continue
            dest = Path(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temp_name(dest)
            shutil.copyfile(src, tmp)
            staged.append((tmp, dest))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, dest in staged:
        os.replace(tmp, dest)
    for dest, src in files.items():
        if src is None:
            Path(dest).unlink(missing_ok=True)
