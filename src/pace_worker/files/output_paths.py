"""Output paths are checked before any work: they never resolve to an input, and they can be
replaced by a rename.

:func:`check_outputs` is called by ``sample``, ``direct_sample`` and ``validate`` before they read
a structure or write a byte, :func:`check_replaceable` by ``train`` for each file it publishes.
An output (or a file written next to it: report, CSV, PNG, basis) that is the same file as one
of the command's inputs (pool, potential, its .yaml/.asi, test set, config.yaml,
meta_config.yaml) is refused with one line. So is an output that could not be replaced when the
work is done (outputs are published by renaming finished files onto these names): one that
exists and is not a regular file (a device such as ``/dev/null``, a FIFO, a socket, a folder, a
symbolic link loop — a rename would replace the device node itself), one marked immutable or
append-only (``chattr +i`` / ``+a``), one that is a mount point (a single bind-mounted file),
one in a folder that cannot be written (permissions, a read-only file system) or under a file.
``train`` is the one command that replaces a file it read (the previous potential it
warm-started from), by design: see :mod:`pace_worker.commands.train`.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from pathlib import Path
from typing import Mapping, Optional

from pace_worker.errors import InputError

FS_IOC_GETFLAGS = 0x80086601  # Linux: read an inode's attribute flags (what lsattr shows)
FS_IMMUTABLE_FL, FS_APPEND_FL = 0x10, 0x20


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (after symlinks and ``..``; hard links too when both exist)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop: only the same spelling is the same file
        return os.path.abspath(a) == os.path.abspath(b)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def _attribute_flags(path: Path) -> int:
    """The inode flags of a regular file (immutable, append-only, ...); 0 where the file system
    has none to tell."""

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
    except OSError:  # not supported here (ENOTTY, EOPNOTSUPP)
        return 0
    finally:
        os.close(fd)


def replace_problem(path: Path) -> Optional[str]:
    """Why a rename onto ``path`` would fail or do harm, if it would (the path itself only)."""
    try:
        info = os.lstat(path)
    except OSError:
        return None  # nothing there yet
    if stat.S_ISLNK(info.st_mode):
        try:
            info = os.stat(path)  # publishing replaces the link; its target must be a file too
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symbolic link loop (a link that leads back to itself); remove it or choose another path"
            return None  # a dangling link is replaced
    if stat.S_ISDIR(info.st_mode):
        return "is a folder; give a file path"
    if not stat.S_ISREG(info.st_mode):
        return (f"is a {_kind(info.st_mode)}, not a regular file; an output only ever replaces a regular file "
                "(renaming onto it would replace the device node itself): choose another path")
    flags = _attribute_flags(path)
    if flags & FS_IMMUTABLE_FL:
        return f"cannot be replaced: it is immutable (chattr +i); run 'chattr -i {path}' or choose another path"
    if flags & FS_APPEND_FL:
        return f"cannot be replaced: it is append-only (chattr +a); run 'chattr -a {path}' or choose another path"
    try:
        if os.lstat(path).st_dev != os.stat(Path(path).parent).st_dev:
            return ("is a mount point (a file mounted on its own, e.g. docker -v file:file), which a rename cannot "
                    "replace: mount its folder instead, or choose another path")
    except OSError:
        pass
    return None


def check_replaceable(path: Path, what: str) -> None:
    """Refuse an output path that the command could not publish to at the end (module docstring):
    the path itself, then the folder it goes into (created when missing)."""
    path = Path(path)
    problem = replace_problem(path)
    if problem is not None:
        raise InputError(f"{what} '{path}' {problem}")
    existing = path.parent
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} '{path}': '{existing}' is a file, not a folder; choose another output path")
    if not os.access(existing, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "is on a read-only file system" if read_only else "is not writable"
        raise InputError(f"{what} '{path}': folder '{existing}' {why}; choose another output path")



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
        check_replaceable(out, "output" if out_what == "--output" else f"{out_what} output")
