"""Errors that the command line turns into one clear line and an exit status."""
import difflib
import errno
import os
from pathlib import Path


class InputError(Exception):
    """Bad input from the user (a file, a structure, a config key): exit status 2.

    The message is one line that says which file / structure / key is wrong, what is wrong
    and what to do about it.
    """

    exit_code = 2


class FitError(Exception):
    """The fit itself failed (pacemaker crashed): exit status 1, outputs left untouched."""

    exit_code = 1


class DiskFull(Exception):
    """The file system filled up while outputs were written: exit status 1; the previous outputs
    are left as they were (the new ones were still under temporary names)."""

    exit_code = 1


def missing_reason(path) -> str:
    """Why ``path`` names no file, for a message: a symbolic link loop, a broken symbolic link, or
    plainly nothing there."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (a link that leads back to itself)"
        if os.path.islink(path):
            return f"is a broken symbolic link (to '{os.readlink(path)}', which does not exist)"
        if exc.errno == errno.ENOTDIR:
            return "does not exist (a part of the path is a file, not a folder)"
        return "does not exist"
    return "exists"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line error messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_readable_file(path, what: str, hint: str = "") -> Path:
    """``path`` as a Path if it is a readable file; else an InputError naming ``what``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} '{path}' {missing_reason(path)}{'; ' + hint if hint else ''}")
    if not path.is_file():
        raise InputError(f"{what} '{path}' is not a file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise InputError(f"{what} '{path}' cannot be read ({exc.strerror}); check its permissions")
    return path


def closest_name(name, valid, cutoff: float = 0.5):
    """The one name of ``valid`` that ``name`` is most likely a misspelling of (difflib ratio at
    least ``cutoff``), or None: the one source of every "did you mean" in our messages."""
    close = difflib.get_close_matches(str(name), sorted(valid), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(name, valid) -> str:
    """``did you mean 'x'?`` for the closest valid name, else the list of valid keys."""
    near = closest_name(name, valid)
    return f"did you mean '{near}'?" if near else f"valid keys: {', '.join(sorted(valid))}"
