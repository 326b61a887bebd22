"""The ICAMS stack, imported lazily and without its side effects on our process.

``import pyace`` calls ``logging.basicConfig`` (adds a root handler at INFO); several of its
modules do it again. :func:`import_pyace` snapshots the root logger and restores it, so our
own logging configuration stays as the CLI set it. TensorFlow/tensorpotential are never
imported in the worker's own process: fits run in a child process (see :mod:`pace_worker.ace.pacemaker_run`).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.metadata as md
import logging
import os


@contextlib.contextmanager
def preserved_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)


def import_pyace():
    """Import pyace (and the submodules we use) with our root logger left as it was."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with preserved_root_logger():
        pyace = importlib.import_module("pyace")
        importlib.import_module("pyace.activelearning")
        importlib.import_module("pyace.basisextension")
    return pyace


def stack_versions() -> dict[str, str]:
    """Installed versions of the stack (from package metadata: nothing heavy is imported)."""
    versions = {}
    for name in ("python-ace", "tensorpotential", "tensorflow", "tf_keras", "numpy", "ase"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions
