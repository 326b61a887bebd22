"""Random access to the frames of an extxyz file, so worker processes can read their own chunks.

:func:`frame_offsets` scans the file once (line counts only, no parsing of atoms) and returns
the byte offset of every frame; :func:`read_frames` parses ``count`` frames from an offset with
ASE. A big pool is then read in parallel by the workers instead of serially by the client.
Compressed files cannot seek: :func:`chunk_ranges` returns None for them and the caller reads
them sequentially.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from pace_worker.errors import InputError, check_readable_file, first_line

COMPRESSED = (".gz", ".bz2", ".xz")


def frame_offsets(path: Path, what: str = "candidates", elements: Optional[set] = None) -> list[int]:
    """Byte offset of each frame (a frame = atom-count line, comment line, one line per atom).

    With ``elements`` (a set), the chemical symbols of all atoms (first column) are added to it.
    A compressed file is scanned too (its offsets are then only counts, not seekable).
    """
    import ase.io.formats

    offsets: list[int] = []
    with ase.io.formats.open_with_compression(str(path), "rb") as f:
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
                raise InputError(f"{what} '{path}': structure {len(offsets)} does not start with an atom count "
                                 f"(line '{line.decode(errors='replace').strip()[:40]}'); give an extxyz file")
            offsets.append(pos)
            pos += len(line)
            for k in range(n_atoms + 1):
                body = f.readline()
                if not body:
                    raise InputError(f"{what} '{path}': structure {len(offsets) - 1} is cut short "
                                     f"(expected {n_atoms} atoms); the file is incomplete")
                pos += len(body)
                if elements is not None and k:
                    elements.add(body.split(maxsplit=1)[0].decode())


def chunk_ranges(path: Path, chunk_size: int, offsets: Optional[list[int]] = None,
                 what: str = "candidates") -> Optional[list[tuple[int, int, int]]]:
    """``(first_index, offset, count)`` per chunk, or None for a compressed file."""
    if Path(path).suffix in COMPRESSED:
        return None
    offsets = frame_offsets(path, what) if offsets is None else offsets
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


@dataclass
class PoolChunk:
    """A chunk of a pool for a worker: a byte range of the file, or structures already read.

    ``options`` carries per-chunk settings of the command that made it (e.g. what to send back).
    """

    first_index: int
    count: int
    path: Optional[str] = None
    offset: int = 0
    structures: Optional[list] = None
    what: str = "candidates"
    options: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.count

    def read(self) -> list:
        """The chunk's structures (parsed here, i.e. on the worker, for a byte range)."""
        if self.structures is not None:
            return self.structures
        try:
            return read_frames(self.path, self.offset, self.count)
        except Exception as exc:  # ASE raises many kinds for a malformed file
            raise InputError(f"{self.what} '{self.path}': structures {self.first_index}-"
                             f"{self.first_index + self.count - 1} cannot be read as extended XYZ "
                             f"({first_line(exc)}); give an extxyz file")


def pool_chunks(path: Path, chunk_size: int, what: str = "candidates", options=lambda: {},
                offsets: Optional[list[int]] = None) -> Iterator[PoolChunk]:
    """Chunks of a pool: byte ranges that the workers read themselves (plain extxyz), or, for a
    compressed file that cannot seek, structures read here one chunk at a time.
    ``options()`` is asked as each chunk is made (see :class:`PoolChunk`); ``offsets`` are the
    frame offsets if already scanned."""
    import ase.io

    path = check_readable_file(path, what)
    ranges = chunk_ranges(path, chunk_size, offsets, what)
    if ranges is not None:
        for first, offset, count in ranges:
            yield PoolChunk(first, count, path=str(path), offset=offset, what=what, options=options())
        return
    chunk: list = []
    next_index = 0
    try:
        for atoms in ase.io.iread(str(path), index=":", format="extxyz"):
            chunk.append(atoms)
            next_index += 1
            if len(chunk) == chunk_size:
                yield PoolChunk(next_index - len(chunk), len(chunk), structures=chunk, what=what, options=options())
                chunk = []
    except Exception as exc:  # ASE raises many kinds for a malformed file
        raise InputError(f"{what} '{path}': structure {next_index} cannot be read as extended XYZ "
                         f"({first_line(exc)}); give an extxyz file")
    if chunk:
        yield PoolChunk(next_index - len(chunk), len(chunk), structures=chunk, what=what, options=options())


def read_selected(path: Path, indices, offsets: Optional[list[int]] = None) -> dict[int, object]:
    """``{index: structure}`` for the given pool indices (seeks for a plain file, streams a compressed one)."""
    import ase.io

    wanted = set(int(i) for i in indices)
    if offsets is not None and Path(path).suffix not in COMPRESSED:
        return {i: read_frames(str(path), offsets[i], 1)[0] for i in sorted(wanted)}
    found = {}
    for i, atoms in enumerate(ase.io.iread(str(path), index=":", format="extxyz")):
        if i in wanted:
            found[i] = atoms
            if len(found) == len(wanted):
                break
    return found
