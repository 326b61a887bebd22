"""Frames of a plain extxyz file parsed by libAtoms' C parser (the ``extxyz`` package on PyPI),
built into ASE ``Atoms`` the way ASE's own reader builds them.

ASE's reader is pure Python: ~0.2 ms per 32-atom frame, a third of what pyace then spends on the
same structure. The C parser reads the same frame in ~0.05 ms. Here its dictionaries become
``Atoms`` with ASE's own rules: the symbols capitalised, ``Lattice`` transposed into the cell,
``pbc`` from the line or true with a ``Lattice``, and the labels (``energy``, ``forces``, …) moved
into a ``SinglePointCalculator`` by ASE's ``set_calc_and_arrays``. The result is equal to ASE's,
field for field (``tests/test_c_extxyz.py`` compares them on every kind of file the project reads).

The two readers do not agree on everything (measured): ASE reads ``nan``, ``inf``, ``1_000`` and
quoted numbers as numbers where the C grammar keeps strings or refuses the line, and the C
parser keeps integers in 32 bits (``12345678901234`` becomes ``1942892530``). So only frames on
which they are known to agree take this path: a comment line of plain tokens only
(:func:`plain_comment`: ``Lattice``, ``Properties``, ``pbc``, a ``stress`` or ``virial`` of nine
real numbers, and keys with a number of at most nine integer digits or a word that is not a
number or a truth value), symbols and positions, other per-atom columns of numbers, and no
integer of ten digits or more anywhere. Anything
else — a logical or string column, a ``move_mask`` or charge column, another array in ``info``,
a frame the C parser cannot read — makes :func:`parse_frames_c` return None, and the caller
parses the chunk with ASE, which stays the reference and the source of every error message.
Without the package (``PACE_WORKER_ASE_READER=1`` forces the same) everything goes to ASE.
"""
from __future__ import annotations

import os
import re
import string
from typing import Optional, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.calculators.calculator import all_properties
from ase.calculators.singlepoint import SinglePointCalculator
from ase.outputs import ArrayProperty, all_outputs

try:
    from extxyz import cextxyz
    from extxyz.core import extract_lattice
except ImportError:  # pragma: no cover - the package is a dependency; ASE alone still works
    cextxyz = None

# per-atom columns ASE's reader turns into something other than a plain array
ASE_SPECIAL_COLUMNS = {"move_mask", "charge", "charges", "initial_charges", "Z", "numbers", "symbols", "positions"}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(r'\s*([A-Za-z_]\w*)=("[^"]*"|[^\s"]+)')
_LATTICE = re.compile(rf'"\s*{_NUMBER}(?:\s+{_NUMBER}){{8}}\s*"')
_PROPERTIES = re.compile(r"[A-Za-z_]\w*:[SRIL]:\d+(?::[A-Za-z_]\w*:[SRIL]:\d+)*")
_PBC = re.compile(r'"[TF] [TF] [TF]"')
_REAL = r"[-+]?(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][-+]?\d+)"
_REAL_3X3 = re.compile(rf'"\s*{_REAL}(?:\s+{_REAL}){{8}}\s*"')  # stress, virial: 3x3 in Fortran order
MATRIX_KEYS = ("stress", "virial")
_WORD = re.compile(r"[A-Za-z_][\w.\-]*")
_INTEGER = re.compile(r"[-+]?\d{1,9}")
_TRUTH = {"t", "f", "true", "false"}
_LONG_INTEGER = re.compile(rb"(?<![\w.+-])[-+]?\d{10,}(?![\w.])")  # a token beyond 32 bits (or near)


def _byte_classes() -> bytes:
    """Each byte's class for :func:`has_long_integer` (a ``bytes.translate`` table): ``d`` a digit,
    ``w`` another word character or ``.``, ``s`` a sign, a space anything else."""
    classes = bytearray(b" " * 256)
    for label, members in ((b"d", string.digits), (b"w", string.ascii_letters + "_."), (b"s", "+-")):
        for byte in members.encode():
            classes[byte] = label[0]
    return bytes(classes)


_CLASSES = _byte_classes()
_DIGITS = re.compile(rb"d+")


class _NotForC(Exception):
    """A frame whose ASE form this module does not build: ASE parses the chunk."""


def available() -> bool:
    """The package is there, the system has in-memory files (Linux), and ASE is not asked for."""
    return cextxyz is not None and hasattr(os, "memfd_create") and not os.environ.get("PACE_WORKER_ASE_READER")


def parse_frames_c(texts: Sequence[bytes], label_snapshots: bool = True) -> Optional[list[Atoms]]:
    """The structures of the given frame texts as ASE's reader would give them, parsed by the C
    parser; None when any of them must be parsed by ASE (see the module). ``label_snapshots``: see
    :func:`labels_calculator`."""
    if not available() or not texts:
        return None
    comments = [_comment_line(text) for text in texts]
    if not all(plain_comment(line) for line in comments):
        return None
    data = b"".join(texts)
    if any(":I:" in line for line in comments) and has_long_integer(data):  # 32-bit integers in C
        return None
    try:
        return [_as_ase_atoms(*frame, label_snapshots) for frame in frame_dicts(data, len(texts))]
    except Exception:  # no in-memory file, the C parser's errors (EOFError included), a frame not for this path
        return None  # ASE decides


def frame_dicts(data: bytes, count: int) -> list[tuple[int, dict, dict]]:
    """``(atoms, info, arrays)`` of each of the first ``count`` frames of extxyz ``data``, as libAtoms'
    C parser reads them (no check that ASE would read them alike: :func:`parse_frames_c` does that).
    The C parser reads a ``FILE*``: the frames go through an in-memory file. Raises OSError when
    there is none (out of file descriptors) and the parser's own errors."""
    fd = os.memfd_create("pace-worker-frames")
    try:
        with open(fd, "wb", closefd=False) as memory_file:  # writes all of it (os.write may write part)
            memory_file.write(data)
        fp = cextxyz.cfopen(f"/proc/self/fd/{fd}", "r")
        if not fp.value:
            raise OSError("the C parser could not open the in-memory file")
        try:
            return [cextxyz.read_frame_dicts(fp) for _ in range(count)]
        finally:
            cextxyz.cfclose(fp)
    finally:
        os.close(fd)


def has_long_integer(data: bytes) -> bool:
    """Whether ``data`` holds an integer token of ten digits or more (``_LONG_INTEGER``: an optional
    sign, not after a word character, ``.``, ``+`` or ``-``; not followed by a word character or
    ``.``). The same answer as ``_LONG_INTEGER.search``, which tries its look-behind at every byte
    (~80 µs per 32-atom frame, an eighth of pyace's work on it): here each byte is mapped to its
    class and only the runs of ten digits or more are looked at (~13 µs)."""
    classes = data.translate(_CLASSES)
    at = classes.find(b"dddddddddd")
    while at >= 0:
        end = _DIGITS.match(classes, at).end()
        if end == len(classes) or classes[end] in b" s":
            before = at - 1
            if before >= 0 and classes[before] == ord("s"):
                before -= 1
            if before < 0 or classes[before] == ord(" "):
                return True
        at = classes.find(b"dddddddddd", end)
    return False


def _comment_line(text: bytes) -> str:
    lines = text.split(b"\n", 2)
    return lines[1].decode(errors="replace") if len(lines) > 1 else ""


def _plain_value(value: str) -> bool:
    if value.startswith('"'):
        value = value[1:-1]
        return bool(_WORD.fullmatch(value)) and _plain_word(value)
    if re.fullmatch(_NUMBER, value):
        return bool(_INTEGER.fullmatch(value)) or not value.lstrip("+-").isdigit()
    return bool(_WORD.fullmatch(value)) and _plain_word(value)


def _plain_word(word: str) -> bool:
    """A word both readers keep as this string (not a number such as ``nan``, not a truth value
    other than T / F / True / False / true / false, which both read as booleans)."""
    try:
        float(word)
        return False
    except ValueError:
        return word.lower() not in _TRUTH or word in ("T", "F", "True", "False", "true", "false")


def plain_comment(line: str) -> bool:
    """Whether an extxyz comment line has only tokens both readers read alike (see the module)."""
    pos, seen = 0, set()
    line = line.rstrip()
    while pos < len(line):
        match = _TOKEN.match(line, pos)
        if match is None:
            return False
        key, value = match.groups()
        if key in seen:
            return False
        seen.add(key)
        if key == "Lattice":
            ok = bool(_LATTICE.fullmatch(value))
        elif key == "Properties":
            ok = bool(_PROPERTIES.fullmatch(value))
        elif key == "pbc":
            ok = bool(_PBC.fullmatch(value))
        elif key in MATRIX_KEYS:
            ok = bool(_REAL_3X3.fullmatch(value))
        else:
            ok = _plain_value(value)
        if not ok:
            return False
        pos = match.end()
    return True


def _as_ase_scalar(value):
    """A C-parsed info value as ASE's reader types it (numbers as numpy scalars)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return np.int64(value)
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    if isinstance(value, str):
        return value
    raise _NotForC("info holds an array")


_NUMBERS_SEEN: dict[bytes, np.ndarray] = {}  # species column -> atomic numbers (pools repeat a few)


def _atomic_numbers(species: np.ndarray) -> np.ndarray:
    """The atomic numbers of a species column, read as ASE reads symbols (capitalised; an unknown
    one raises, and ASE then reads the chunk and names it)."""
    species = np.asarray(species)
    key = species.dtype.str.encode() + species.tobytes()
    numbers = _NUMBERS_SEEN.get(key)
    if numbers is None:
        numbers = np.array([atomic_numbers[str(s).capitalize()] for s in species], dtype=int)
        if len(_NUMBERS_SEEN) >= 1024:
            _NUMBERS_SEEN.clear()
        _NUMBERS_SEEN[key] = numbers
    return numbers  # Atoms copies it


def _as_ase_atoms(natoms: int, info: dict, arrays: dict, label_snapshots: bool = True) -> Atoms:
    """One frame's dictionaries as ASE's ``_read_xyz_frame`` builds its ``Atoms``."""
    info = dict(info)
    info.pop("Properties", None)
    lattice = extract_lattice(info)  # extxyz's own reading of Lattice (vectors as columns)
    pbc = info.pop("pbc", None)
    if pbc is None:
        pbc = lattice is not None  # ASE: a Lattice means periodic in all directions
    elif np.shape(pbc) != (3,):
        raise _NotForC("pbc is not three flags")
    info = {key: (np.asarray(value, dtype=np.float64) if key in MATRIX_KEYS else _as_ase_scalar(value))
            for key, value in info.items()}
    columns = dict(arrays)
    species, positions = columns.pop("species", None), columns.pop("pos", None)
    if species is None or positions is None or len(species) != natoms or set(columns) & ASE_SPECIAL_COLUMNS:
        raise _NotForC("not species and positions with plain columns")
    for name, column in columns.items():
        kind = np.asarray(column).dtype.kind
        if kind not in "fi":
            raise _NotForC(f"column {name} is not numeric")
        columns[name] = np.asarray(column, dtype=np.float64) if kind == "f" else np.asarray(column)
    atoms = Atoms(numbers=_atomic_numbers(species), positions=np.asarray(positions, dtype=np.float64),
                  cell=None if lattice is None else lattice.T, pbc=pbc, info=info)
    _set_calc_and_arrays(atoms, columns, label_snapshots)
    return atoms


# what ase.io.extxyz reads into a SinglePointCalculator from the comment line: its
# per_config_properties, made by its rule (outputs SinglePointCalculator accepts that are not per atom)
PER_CONFIG_PROPERTIES = [key for key, value in all_outputs.items() if key in all_properties
                         and not (isinstance(value, ArrayProperty) and value.shapespec[0] == "natoms")]


def _set_calc_and_arrays(atoms: Atoms, columns: dict, label_snapshots: bool = True) -> None:
    """``ase.io.extxyz.set_calc_and_arrays``, step for step (importing ``ase.io`` costs ~0.3 s, more
    than reading 10⁴ frames): label columns and per-structure labels into a SinglePointCalculator, a
    3×3 stress as Voigt, the other columns into ``atoms.arrays``."""
    results = {}
    for name, column in columns.items():
        if name in all_properties:
            results[name] = column
        else:
            atoms.new_array(name, column)
    for key in list(atoms.info):
        if key in PER_CONFIG_PROPERTIES:
            results[key] = atoms.info.pop(key)
            if key == "stress" and results[key].shape == (3, 3):
                stress = results[key]  # its upper triangle, as ASE takes it
                results[key] = np.array([stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2],
                                         stress[0, 1]])
    if results:
        atoms.calc = labels_calculator(atoms, results, label_snapshots)


class _Itself:
    """Stands for a structure whose ``copy()`` is the structure itself."""

    __slots__ = ("atoms",)

    def __init__(self, atoms: Atoms):
        self.atoms = atoms

    def copy(self) -> Atoms:
        return self.atoms


def labels_calculator(atoms: Atoms, results: dict, snapshot: bool = True) -> SinglePointCalculator:
    """ASE's ``SinglePointCalculator(atoms, **results)``, which keeps a copy of the structure (to
    tell later whether it changed). Without ``snapshot`` the calculator is made by the same
    ``__init__`` but keeps the structure itself: for a reader that takes the labels and drops the
    structure (``validate``'s workers), that copy is a fifth of the time parsing a labelled frame
    takes (~20 µs of ~80 for 32 atoms)."""
    return SinglePointCalculator(atoms if snapshot else _Itself(atoms), **results)
