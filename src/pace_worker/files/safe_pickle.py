"""Reading pacemaker's DataFrame pickles (``.pckl.gzip``) without letting the file run code.

Unpickling calls whatever the file names (``os.system`` included); pandas' own documentation
warns against reading untrusted pickles. :func:`load_dataframe` unpickles with a restricted
unpickler that admits only the classes and functions a pacemaker DataFrame of ASE structures is
made of (:data:`ALLOWED`: the DataFrame and its blocks and indexes, numpy arrays, dtypes and
scalars, ``ase.Atoms`` with its cell, single-point calculator and simple constraints) and
refuses anything else before it is called, in one line naming it. Older pandas spellings are
mapped as pandas maps them. There is no switch to turn this off: a pickle that needs more is
converted to extxyz by whoever trusts it.
"""
from __future__ import annotations

import gzip
import importlib
import io
import pickle
from pathlib import Path

from pace_worker.errors import InputError

ALLOWED = {
    # pandas: the frame, its block manager, blocks and indexes
    ("pandas.core.frame", "DataFrame"), ("pandas.core.series", "Series"),
    ("pandas.core.internals.managers", "BlockManager"), ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas._libs.internals", "_unpickle_block"), ("pandas.core.internals.blocks", "new_block"),
    ("pandas.core.internals.blocks", "Block"), ("pandas.core.internals.blocks", "NumpyBlock"),
    ("pandas.core.internals.blocks", "ObjectBlock"), ("pandas.core.internals.blocks", "FloatBlock"),
    ("pandas.core.internals.blocks", "IntBlock"), ("pandas.core.internals.blocks", "BoolBlock"),
    ("pandas.core.indexes.base", "Index"), ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.range", "RangeIndex"), ("pandas.core.indexes.numeric", "Int64Index"),
    ("pandas.core.indexes.numeric", "Float64Index"),
    # numpy: arrays, dtypes, scalars (old and new module paths)
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    # ASE structures with their labels
    ("ase.atoms", "Atoms"), ("ase.atom", "Atom"), ("ase.cell", "Cell"),
    ("ase.calculators.singlepoint", "SinglePointCalculator"),
    ("ase.calculators.singlepoint", "SinglePointDFTCalculator"),
    ("ase.calculators.singlepoint", "SinglePointKPoint"),
    ("ase.calculators.calculator", "Parameters"),
    ("ase.constraints", "FixAtoms"), ("ase.constraints.fix_atoms", "FixAtoms"),
    ("ase.constraints", "FixCartesian"),
    # plain Python building blocks
    ("builtins", "slice"), ("builtins", "complex"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "bytearray"), ("builtins", "object"), ("copyreg", "_reconstructor"),
    ("collections", "OrderedDict"), ("_codecs", "encode"),
}
# ``getattr(obj, name)`` is how an ASE calculator's stored bound method is pickled; any other
# name could reach a method that writes files (``ndarray.tofile``), so only these are admitted
ALLOWED_ATTRIBUTES = {"_deprecated_get_spin_polarized"}
PY2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class Refused(Exception):
    """The pickle names something a pacemaker DataFrame does not contain."""


def _safe_getattr(obj, name):
    if name not in ALLOWED_ATTRIBUTES:
        raise Refused(f"getattr(..., {name!r})")
    return getattr(obj, name)


def _find_allowed(module: str, name: str):
    from pandas.compat.pickle_compat import _class_locations_map

    module = PY2_NAMES.get(module, module)
    module, name = _class_locations_map.get((module, name), (module, name))
    if (module, name) == ("builtins", "getattr"):
        return _safe_getattr
    if (module, name) not in ALLOWED:
        raise Refused(f"{module}.{name}")

    target = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return _find_allowed(module, name)


def _compat_unpickler():
    """pandas' pure-Python unpickler for pickles of older pandas versions, restricted the same way."""
    from pandas.compat.pickle_compat import Unpickler

    class RestrictedCompat(Unpickler):
        def find_class(self, module, name):
            return _find_allowed(module, name)

    return RestrictedCompat


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(("gzip", ".gz")) else open(path, "rb")


def load_dataframe(path: Path, what: str = "dataset"):
    """The object pickled in ``path`` (gzip by suffix), built from :data:`ALLOWED` only; an
    :class:`InputError` naming the first thing refused, or why the file cannot be read."""
    path = Path(path)
    try:
        with _open(path) as f:
            data = f.read()
        try:
            return _RestrictedUnpickler(io.BytesIO(data)).load()
        except (AttributeError, ImportError, TypeError):  # an older pandas' layout: as pandas does
            return _compat_unpickler()(io.BytesIO(data)).load()
    except Refused as exc:
        raise InputError(f"{what} '{path}' is a pickle that would load {exc}, which a pacemaker DataFrame does not "
                         "contain; it is refused, since unpickling runs what the file names. Give an extxyz file "
                         "(or a DataFrame of ASE Atoms with energy and forces, saved with pandas)") from None
    except Exception as exc:  # a damaged or truncated file
        raise InputError(f"{what} '{path}' is not a readable pandas pickle ({type(exc).__name__}: {exc}); "
                         "give a pacemaker DataFrame (.pckl.gzip) or an extxyz file") from None
