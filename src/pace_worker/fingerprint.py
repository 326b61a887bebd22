"""A structure's identity: the content hash by which a structure is recognised across files and
iterations (labels and ``info`` ignored), e.g. to keep its train/test role or to skip duplicates."""
from __future__ import annotations

import hashlib

import numpy as np
from ase import Atoms


def structure_fingerprint(atoms: Atoms, salt: str = "") -> str:
    """A content hash of a structure (species, positions, cell, pbc) that ignores labels/info."""
    return _content_hash(atoms, salt).hexdigest()


def structure_key(atoms: Atoms) -> bytes:
    """The first 128 bits of :func:`structure_fingerprint` as 16 bytes: a compact key for
    recognising duplicates among up to millions of structures (a quarter of the hex string's size)."""
    return _content_hash(atoms, "").digest()[:16]


def _content_hash(atoms: Atoms, salt: str):
    h = hashlib.sha256(salt.encode())
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.positions, dtype=float), 6).tobytes())
    h.update(np.round(np.asarray(atoms.cell.array, dtype=float), 6).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    return h
