"""Random access to the frames of an extxyz file, so worker processes can read their own chunks.

:func:`frame_offsets` scans the file once (line counts only, no parsing of atoms) and returns
the byte offset of every frame; :func:`read_frames` parses ``count`` frames from an offset with
ASE. A big pool is then read in parallel by the workers instead of serially by the client.
Compressed files cannot seek: :func:`chunk_ranges` returns None for them and the caller reads
them sequentially.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

from pace_worker.errors import InputError

COMPRESSED = (".gz", ".bz2", ".xz")


def frame_offsets(path: Path) -> list[int]:
    """Byte offset of each frame (a frame = atom-count line, comment line, one line per atom)."""
    offsets: list[int] = []
    with open(path, "rb") as f:
        pos = 0
        while True:
            line = f.readline()
            if not line:
                return offsets
            if not line.strip():
                pos += len(line)
                continue
            try:
                n_atoms = int(line)
            except ValueError:
                raise InputError(f"candidates '{path}': structure {len(offsets)} does not start with an atom count "
                                 f"(line '{line.decode(errors='replace').strip()[:40]}'); give an extxyz file")
            offsets.append(pos)
            pos += len(line)
            for _ in range(n_atoms + 1):
                body = f.readline()
                if not body:
                    raise InputError(f"candidates '{path}': structure {len(offsets) - 1} is cut short "
                                     f"(expected {n_atoms} atoms); the file is incomplete")
                pos += len(body)


def chunk_ranges(path: Path, chunk_size: int) -> Optional[list[tuple[int, int, int]]]:
    """``(first_index, offset, count)`` per chunk, or None for a compressed file."""
    if Path(path).suffix in COMPRESSED:
        return None
    offsets = frame_offsets(path)
    return [(i, offsets[i], min(chunk_size, len(offsets) - i)) for i in range(0, len(offsets), chunk_size)]


def read_frames(path: str, offset: int, count: int) -> list:
    """``count`` structures parsed by ASE from byte ``offset`` of an extxyz file."""
    import ase.io

    lines = []
    with open(path, "rb") as f:
        f.seek(offset)
        for _ in range(count):
            head = f.readline()
            while head and not head.strip():
                head = f.readline()
            n_atoms = int(head)
            lines.append(head)
            lines.extend(f.readline() for _ in range(n_atoms + 1))
    text = b"".join(lines).decode()
    return ase.io.read(io.StringIO(text), index=":", format="extxyz")
