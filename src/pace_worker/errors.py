"""Errors that the command line turns into one clear line and an exit status."""


class InputError(Exception):
    """Bad input from the user (a file, a structure, a config key): exit status 2.

    The message is one line that says which file / structure / key is wrong, what is wrong
    and what to do about it.
    """

    exit_code = 2


class FitError(Exception):
    """The fit itself failed (pacemaker crashed): exit status 1, outputs left untouched."""

    exit_code = 1
