"""Errors that the command line turns into one clear line and an exit status."""
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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line error messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_readable_file(path, what: str, hint: str = "") -> Path:
    """``path`` as a Path if it is a readable file; else an InputError naming ``what``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} '{path}' does not exist{'; ' + hint if hint else ''}")
    if not path.is_file():
        raise InputError(f"{what} '{path}' is not a file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise InputError(f"{what} '{path}' cannot be read ({exc.strerror}); check its permissions")
    return path
