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
