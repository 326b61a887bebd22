"""Compressed structure files: which suffixes mean which compression (read and written alike)."""
from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}  # suffix -> open(path, mode)
COMPRESSED = tuple(OPENERS)


def is_compressed(path) -> bool:
    return Path(path).suffix in COMPRESSED


def open_with_compression(path, mode: str = "r", name=None):
    """``path`` opened through the (de)compressor the suffix of ``name`` (default ``path``; e.g. the
    final name of a temporary file) names, or as a plain file: what
    ``ase.io.formats.open_with_compression`` does, without importing ASE's ``io``. ``"r"``/``"w"``/``"a"``
    mean text for a compressed file too (its openers default to bytes)."""
    opener = OPENERS.get(Path(name or path).suffix)
    if opener is None:
        return open(path, mode)
    return opener(path, mode + "t" if mode in ("r", "w", "a") else mode)
