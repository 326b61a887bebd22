"""The ICAMS stack, imported lazily and without its side effects on our process.

``import pyace`` runs pyace's ``__init__``, which imports its whole Python layer (ASE's ``io``, SciPy,
pandas: ~0.6 s) and calls ``logging.basicConfig`` (adds a root handler at INFO); several of its
modules do it again. Two ways in:

* :func:`import_pyace_core` — pyace's package with its compiled modules only (``basis``,
  ``catomicenvironment``, ``calculator``, ``coupling``, ``evaluator``: the B-basis, its evaluator and
  the atomic environments, ~5 ms), the package's ``__init__`` not run yet. ``sample``, ``validate``
  and ``direct_sample`` given a potential need nothing else, and their worker processes start
  that much sooner. ``from pyace import X`` of anything else runs the ``__init__`` then, into the
  same module object (with the root logger kept); pyace's Python submodules (``pyace.maxvol``,
  ``pyace.activelearning`` …) import as usual (:func:`import_pyace_module`).
* :func:`import_pyace` — all of pyace (the ``__init__`` run), what ``train`` and the rest use.

Both snapshot the root logger and restore it, so our own logging configuration stays as the CLI
set it. TensorFlow/tensorpotential are never imported in the worker's own process: fits run in a
child process (see :mod:`pace_worker.ace.pacemaker_run`).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.metadata as md
import importlib.util
import logging
import os
import sys
import threading
from typing import Iterable, Iterator

# pyace's compiled modules, in the order its own __init__ imports them
PYACE_CORE = ("catomicenvironment", "basis", "calculator", "coupling", "evaluator")


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


def import_pyace_core():
    """pyace's package object with its compiled modules imported, its ``__init__`` not (yet) run."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    package = sys.modules.get("pyace")
    if package is None:
        spec = importlib.util.find_spec("pyace")
        if spec is None:
            raise ModuleNotFoundError("No module named 'pyace'", name="pyace")
        package = importlib.util.module_from_spec(spec)
        package.__getattr__ = _completing_getattr  # PEP 562: asked only for names not there yet
        sys.modules["pyace"] = package
    with preserved_root_logger():
        for name in PYACE_CORE:
            importlib.import_module(f"pyace.{name}")
    return package


def import_pyace_module(name: str):
    """One of pyace's Python submodules (e.g. ``maxvol``) on top of :func:`import_pyace_core`,
    without pyace's ``__init__``."""
    import_pyace_core()
    with preserved_root_logger():
        return importlib.import_module(f"pyace.{name}")


def import_pyace():
    """All of pyace (its ``__init__`` run), with our root logger left as it was."""
    package = import_pyace_core()
    _complete(package)
    with preserved_root_logger():
        importlib.import_module("pyace.activelearning")
        importlib.import_module("pyace.basisextension")
    return package


def _complete(package) -> None:
    """Run pyace's ``__init__`` into the package object :func:`import_pyace_core` made (once)."""
    if package.__dict__.pop("__getattr__", None) is None:
        return  # run already, or pyace was imported the ordinary way
    with preserved_root_logger():
        package.__spec__.loader.exec_module(package)


def _completing_getattr(name: str):
    package = sys.modules["pyace"]
    if name.startswith("__"):  # dunder probes (pickle, inspect, typing) do not complete pyace
        raise AttributeError(f"module 'pyace' has no attribute '{name}'")
    _complete(package)
    return getattr(package, name)


class BackgroundImports:
    """Modules imported on a thread while this process waits for its worker processes, so the work
    after them (a selection, clustering, writing with ASE's ``io``) does not wait for imports that
    cost tenths of a second to a second. :meth:`during` starts it once the workers are forked (and
    only when the work runs outside this process) and joins it when their results end, before
    anything forks again (a fork during an import would leave the child that module's import lock
    held). A module is imported as it would be where it is used (pyace's Python submodules by
    :func:`import_pyace_module`); one that fails to import here fails again there, with its error."""

    def __init__(self, *modules: str):
        self.modules = modules
        self._thread: threading.Thread | None = None

    def start(self) -> "BackgroundImports":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="background imports", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        for name in self.modules:
            try:
                if name.startswith("pyace."):
                    import_pyace_module(name.removeprefix("pyace."))
                else:
                    importlib.import_module(name)
            except Exception:  # noqa: BLE001 (the code that needs it imports it again and reports)
                pass

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def during(self, results: Iterable, elsewhere: bool) -> Iterator:
        """``results`` (an executor's, in order) passed through; once the first one is in (the
        workers are forked then) the imports start, if the work runs ``elsewhere`` than in this
        process (:meth:`pace_worker.parallel.executor.ChunkExecutor.runs_elsewhere`); joined when the
        results end or the consumer stops."""
        try:
            for result in results:
                if elsewhere:
                    self.start()
                yield result
        finally:
            self.join()


def stack_versions() -> dict[str, str]:
    """Installed versions of the stack (from package metadata: nothing heavy is imported)."""
    versions = {}
    for name in ("python-ace", "tensorpotential", "tensorflow", "tf_keras", "numpy", "ase"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions
