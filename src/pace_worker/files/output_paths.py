"""Output paths are checked before any work: they never resolve to an input, and they can be written.

:func:`check_outputs` is called by ``sample``, ``direct_sample`` and ``validate`` before they read
a structure or write a byte. An output (or a file written next to it: report, CSV, PNG, basis)
that is the same file as one of the command's inputs (pool, potential, its .yaml/.asi, test set,
config.yaml, meta_config.yaml) is refused with one line; so is an output that is a folder, whose
folder is a file or cannot be written. ``train`` is the one command that replaces a file it read
(the previous potential it warm-started from), by design: see :mod:`pace_worker.commands.train`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

from pace_worker.errors import InputError


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (after symlinks and ``..``; hard links too when both exist)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_writable(path: Path, what: str) -> None:
    """Refuse an output path that cannot become a file: a folder, under a file, or in a read-only folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} '{path}' is a folder; give a file path")
    parent = path.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} '{path}': '{existing}' is a file, not a folder; choose another output path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what} '{path}': folder '{existing}' is not writable; choose another output path")


def check_outputs(outputs: Mapping[str, Path], inputs: Mapping[str, Optional[Path]]) -> None:
    """Refuse outputs that would overwrite an input or cannot be written (see the module docstring).

    ``outputs`` and ``inputs`` map a description (``"--output"``, ``"report"``, ``"pool"``,
    ``"config"``, …) to a path; inputs of ``None`` are skipped.
    """
    for out_what, out in outputs.items():
        out = Path(out)
        for in_what, source in inputs.items():
            if source is not None and same_file(out, Path(source)):
                written = "" if out_what == "--output" else f" ({out_what}, written next to --output)"
                raise InputError(f"output '{out}'{written} is the {in_what} '{source}': it would be overwritten; "
                                 "choose another --output path")
        check_writable(out, "output" if out_what == "--output" else f"{out_what} output")
