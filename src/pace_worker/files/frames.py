"""Frames of an extxyz file, split without parsing, so worker processes parse their own chunks.

:func:`frame_offsets` scans the file once (line counts only, no parsing of atoms) and returns
the byte offset of every frame; :func:`read_frames` parses ``count`` frames from an offset
(:func:`parse_frame_texts`: libAtoms' C parser where it reads them as ASE does, else ASE). A big
pool is then read in parallel by the workers instead of serially by the client.
A compressed file cannot seek: :func:`pool_chunks` then decompresses it once, in order, and
hands each chunk's text to a worker to parse (ASE's own reader seeks back to every frame of a
compressed file, which decompresses it from the start each time: 2,000 frames of a ``.xyz.gz``
took 43 s, 20,000 would take over an hour). All frame splitting is :func:`pace_worker.files.frame_text.split_frames`.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import lzma
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

from pace_worker.errors import InputError, check_readable_file, first_line
from pace_worker.files.c_extxyz import parse_frames_c
from pace_worker.files.compression import is_compressed, open_with_compression
from pace_worker.files.frame_text import frame_texts_at, regular_frame_offsets, split_frames
from pace_worker.files.structures import shape_problem

UNREADABLE = "unreadable"  # reason of a frame ASE cannot parse (unknown element, bad number, bad bytes)


def frame_offsets(path: Path, what: str = "candidates", elements: Optional[set] = None) -> Sequence[int]:
    """Byte offset of each frame, as 64-bit integers (8 bytes a frame: a pool of 10⁶ frames costs
    8 MB, where a list of Python ints cost ~36 MB). With ``elements`` (a set), the chemical symbols
    of all atoms are added to it. A plain file of regular frames is scanned with NumPy
    (:func:`pace_worker.files.frame_text.regular_frame_offsets`: with elements at 10⁵ 32-atom
    frames 0.5 s where reading it line by line took 1.2 s, before any worker could start);
    anything else line by line. A compressed file is scanned too (its offsets are then only counts, not
    seekable)."""

    if not is_compressed(path):
        with damaged_file(path, what):  # a read error (EIO) is one line, as the splitter's
            offsets = regular_frame_offsets(path, elements)
        if offsets is not None:
            return offsets
    with open_with_compression(path, "rb") as f, damaged_file(path, what):
        return array("q", (offset for offset, _ in split_frames(f, path, what, keep_text=False, elements=elements)))


@contextlib.contextmanager
def damaged_file(path, what: str):
    """A compressed file that is truncated or corrupt becomes one clear InputError."""
    try:
        yield
    except (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise InputError(f"{what} '{path}' is damaged ({type(exc).__name__}: {first_line(exc)}); a compressed "
                         "file may be truncated: copy or decompress it again")


def chunk_ranges(path: Path, chunk_size: int, offsets: Optional[Sequence[int]] = None,
                 what: str = "candidates") -> Optional[list[tuple[int, int, int]]]:
    """``(first_index, offset, count)`` per chunk, or None for a compressed file."""
    if is_compressed(path):
        return None
    offsets = frame_offsets(path, what) if offsets is None else offsets
    return [(i, offsets[i], min(chunk_size, len(offsets) - i)) for i in range(0, len(offsets), chunk_size)]


def parse_frames(text: bytes) -> list:
    """The structures of extxyz ``text``, parsed by ASE."""

    import ase.io

    return ase.io.read(io.StringIO(text.decode()), index=":", format="extxyz")


def parse_frame_texts(texts: list[bytes], label_snapshots: bool = True) -> list:
    """The structures of these frame texts: by the C parser where it reads them as ASE does
    (:mod:`pace_worker.files.c_extxyz`; ``label_snapshots``: see its ``labels_calculator``), else
    by ASE."""
    parsed = parse_frames_c(texts, label_snapshots)
    return parsed if parsed is not None else parse_frames(b"".join(texts))


def read_frames(path: str, offset: int, count: int, first_index: int = 0, what: str = "structures") -> list:
    """``count`` structures from byte ``offset`` of an extxyz file (:func:`parse_frame_texts`)."""
    return parse_frame_texts(frame_texts_at(path, offset, count, first_index, what))


@dataclass
class PoolChunk:
    """A chunk of a pool for a worker: a byte range of the file, or the chunk's text (from a
    compressed file).

    ``options`` carries per-chunk settings of the command that made it (e.g. what to send back).
    """

    first_index: int
    count: int
    path: Optional[str] = None
    offset: int = 0
    text: Optional[bytes] = None
    what: str = "candidates"
    options: dict = field(default_factory=dict)
    _texts: Optional[list[bytes]] = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.count

    def parse(self, label_snapshots: bool = True) -> list:
        """The chunk's structures, parsed here (on the worker); ASE's own errors pass through
        (``label_snapshots``: see :func:`parse_frame_texts`)."""
        return parse_frame_texts(self.texts(), label_snapshots)

    def texts(self) -> list[bytes]:
        """The text of each frame of the chunk (read once, then kept with the chunk)."""
        if self._texts is None:
            if self.text is not None:
                self._texts = [text for _, text in split_frames(io.BytesIO(self.text), self.path, self.what)]
            else:
                self._texts = frame_texts_at(self.path, self.offset, self.count, self.first_index, self.what)
        return self._texts

    def read(self, label_snapshots: bool = True) -> list:
        """The chunk's structures; a frame ASE cannot parse fails the chunk with one InputError."""
        try:
            return self.parse(label_snapshots)
        except InputError:
            raise
        except Exception as exc:  # ASE raises many kinds for a malformed file
            raise InputError(f"{self.what} '{self.path}': structures {self.first_index}-"
                             f"{self.first_index + self.count - 1} cannot be read as extended XYZ "
                             f"({first_line(exc)}); give an extxyz file")


def read_checked(chunk: "PoolChunk") -> list[tuple[Optional[object], Optional[str]]]:
    """``(structure, None)`` or ``(None, reason)`` for each structure of a pool chunk: a frame
    ASE cannot parse is ``unreadable``; a parsed one with a shape pyace must not see gets the reason
    of :func:`pace_worker.files.structures.shape_problem` (the rule on close atoms is applied with
    pyace's environment: :meth:`pace_worker.ace.projections.BProjector.checked_environments`). One
    bad frame spoils only itself."""
    try:
        parsed = chunk.parse()
        if len(parsed) != chunk.count:
            raise ValueError("frame count mismatch")
        results: list = [(atoms, None) for atoms in parsed]
    except InputError:
        raise
    except Exception:  # parse frame by frame: only the bad ones are lost
        results = []
        for text in chunk.texts():
            try:
                results.append((parse_frames(text)[0], None))
            except Exception as exc:
                results.append((None, f"{UNREADABLE}: {first_line(exc)[:60]}"))
    checked = []
    for atoms, reason in results:
        if atoms is not None:
            problem = shape_problem(atoms)
            if problem is not None:
                atoms, reason = None, f"{problem[0]}: {problem[1]}"
        checked.append((atoms, reason))
    return checked


def pool_chunks(path: Path, chunk_size: int, what: str = "candidates", options=lambda: {},
                offsets: Optional[Sequence[int]] = None) -> Iterator[PoolChunk]:
    """Chunks of a pool for the workers to parse: byte ranges of a plain extxyz file, or the text
    of ``chunk_size`` frames of a compressed one (decompressed here, once, in order).
    ``options()`` is asked as each chunk is made (see :class:`PoolChunk`); ``offsets`` are the
    frame offsets if already scanned."""

    path = check_readable_file(path, what)
    ranges = chunk_ranges(path, chunk_size, offsets, what)
    if ranges is not None:
        for first, offset, count in ranges:
            yield PoolChunk(first, count, path=str(path), offset=offset, what=what, options=options())
        return
    with open_with_compression(path, "rb") as f, damaged_file(path, what):
        frames = split_frames(f, path, what)
        first = 0
        while True:
            texts = [text for _, text in itertools.islice(frames, chunk_size)]
            if not texts:
                return
            yield PoolChunk(first, len(texts), path=str(path), text=b"".join(texts), what=what, options=options())
            first += len(texts)


def read_selected(path: Path, indices, offsets: Optional[Sequence[int]] = None) -> dict[int, object]:
    """``{index: structure}`` for the given pool indices (seeks for a plain file, streams a
    compressed one and parses only the wanted frames)."""

    wanted = set(int(i) for i in indices)
    if offsets is not None and not is_compressed(path):
        return {i: read_frames(str(path), offsets[i], 1)[0] for i in sorted(wanted)}
    found = {}
    with open_with_compression(path, "rb") as f, damaged_file(path, "input"):
        for i, (_, text) in enumerate(split_frames(f, path, "input")):
            if i in wanted:
                found[i] = parse_frames(text)[0]
                if len(found) == len(wanted):
                    break
    return found
