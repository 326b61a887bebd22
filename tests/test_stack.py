"""pyace in two steps: its compiled modules without its Python layer (what sample, validate and
direct_sample with a potential need), and the rest on first use, with our root logger kept."""
from __future__ import annotations

import subprocess
import sys

PROBE = """
import logging, sys
logging.getLogger().addHandler(logging.NullHandler())
handlers = list(logging.getLogger().handlers)
from pace_worker.stack import import_pyace_core, BackgroundImports
pyace = import_pyace_core()
from pyace.basis import ACEBBasisSet, BBasisConfiguration
from pyace.evaluator import ACEBEvaluator
print("core", "pandas" in sys.modules, "ase.io" in sys.modules, "scipy" in sys.modules, "pyace.asecalc" in sys.modules)
from pyace import PyACECalculator  # the rest of pyace, run into the same module on first use
import pyace as again
print("complete", again is pyace, PyACECalculator.__module__, "pandas" in sys.modules,
      logging.getLogger().handlers == handlers)
passed = list(BackgroundImports("no_such_module_here").during([1, 2], elsewhere=False))
print("in place", passed, "pyace.maxvol" in sys.modules)
passed = list(BackgroundImports("pyace.maxvol", "no_such_module_here").during([1, 2], elsewhere=True))
print("background", passed, "pyace.maxvol" in sys.modules, logging.getLogger().handlers == handlers)
"""


def test_pyace_core_first_then_the_rest_on_first_use():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert lines[0] == "core False False False False"  # nothing of pyace's Python layer, nor what it imports
    assert lines[1] == "complete True pyace.asecalc True True"
    assert lines[2] == "in place [1, 2] False"  # the work ran here: nothing imported meanwhile
    assert lines[3] == "background [1, 2] True True"  # a module that cannot be imported is left to its user
