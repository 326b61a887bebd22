"""Frame texts of an extxyz file, split without parsing: the atom-count line, the comment line and
one line per atom. :func:`split_frames` is the one splitter; :func:`frame_texts_at` reads
``count`` frames from a byte offset; :func:`file_frame_blocks` all frames of a plain file, in blocks.
:func:`regular_frame_offsets` finds a plain file's frame offsets (and elements) as
:func:`split_frames` would, with NumPy over blocks of the file, when every frame is regular.
"""
from __future__ import annotations

import itertools
import operator
from array import array
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

import numpy as np

from pace_worker.errors import InputError

_HEAD = operator.itemgetter(slice(0, 8))


def _first_tokens(lines: list[bytes]) -> set[bytes]:
    """The first whitespace-separated token of each line (blank lines have none). The distinct
    line heads are looked at, not every line (atom lines of a frame share a few); a head whose
    token may go on past it sends the frame to the line-by-line reading."""
    tokens = set()
    for head in set(map(_HEAD, lines)):
        stripped = head.lstrip()
        fields = stripped.split(None, 1)
        if fields and len(fields[0]) < len(stripped):  # whitespace ends the token inside the head
            tokens.add(fields[0])
        elif fields or len(head) == 8:  # the token, or the blanks, may go on past the head
            return {fields[0] for fields in (line.split(None, 1) for line in lines) if fields}
    return tokens


def split_frames(f: BinaryIO, path, what: str, keep_text: bool = True, elements: Optional[set] = None,
                  first_index: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, frame text or b"")`` per frame (atom-count line, comment line, one line per
    atom) read in order from the binary file ``f`` (positioned at the start of frame
    ``first_index``; offsets count from the file's start, decompressed). With ``elements`` (a
    set), the chemical symbols of all atoms (first column) are added to it. One clear error names
    the structure that is not a frame."""
    pos = f.tell()
    index = first_index
    while True:
        line = f.readline()
        if not line:
            return
        if not line.strip():
            pos += len(line)
            continue
        try:
            n_atoms = int(line)
        except ValueError:
            raise InputError(f"{what} '{path}': structure {index} does not start with an atom count "
                             f"(line '{line.decode(errors='replace').strip()[:40]}'); give an extxyz file")
        offset = pos
        body = list(itertools.islice(f, n_atoms + 1))  # the comment line and one line per atom
        if len(body) < n_atoms + 1:
            raise InputError(f"{what} '{path}': structure {index} is cut short "
                             f"(expected {n_atoms} atoms); the file is incomplete")
        pos += len(line) + sum(map(len, body))
        if elements is not None:
            elements.update(token.decode(errors="replace") for token in _first_tokens(body[1:]))
        yield offset, line + b"".join(body) if keep_text else b""
        index += 1


def frame_texts_at(path: str, offset: int, count: int, first_index: int = 0, what: str = "structures") -> list[bytes]:
    """The text of ``count`` frames from byte ``offset`` of an extxyz file (structure
    ``first_index``, for error messages)."""
    with open(path, "rb") as f:
        f.seek(offset)
        frames = split_frames(f, path, what, first_index=first_index)
        return [text for _, text in itertools.islice(frames, count)]


def file_frame_blocks(path: Path, what: str = "dataset", block: int = 1000) -> Iterator[list[bytes]]:
    """The texts of the frames of a plain (uncompressed) extxyz file, ``block`` frames at a time
    (only one block's text is held at once)."""
    with open(path, "rb") as f:
        frames = split_frames(f, path, what)
        while True:
            texts = [text for _, text in itertools.islice(frames, block)]
            if not texts:
                return
            yield texts


SCAN_BLOCK = 1 << 20  # bytes of a file read, and searched for line ends, at once (1 MiB: cache-sized, as fast as 16)
_NEWLINE = ord("\n")


def regular_frame_offsets(path, elements: Optional[set] = None, block: int = SCAN_BLOCK) -> Optional[array]:
    """The byte offset of every frame of a plain extxyz file, as :func:`split_frames` gives them
    (with ``elements``: the chemical symbols of all atoms added to it), or None when a frame is
    not regular — a line between frames that is not an atom count (a blank line, text), a frame
    cut short, a last line without its line end — and :func:`split_frames` must read the file (it
    then also names the problem). The file is read ``block`` bytes at a time; NumPy finds their
    line ends, and frames are counted off them (:func:`_counted_off`: one by one, and in runs of
    one atom count once several frames in a row have the same count line; a run's count lines
    are compared as bytes with its first: equal bytes, the same count), so a pool of MD snapshots
    costs a few NumPy calls per block, not a Python loop over its lines. With
    ``elements``, the first 8 bytes of every atom line of a block are gathered and only the
    distinct ones are read (:func:`_first_tokens`' rule). At 10⁵ 32-atom frames (medians, this
    VM): 0.43 s against 0.46 s line by line, with elements 0.50 s against 1.21 s; NumPy's cost
    follows the bytes and the splitter's the lines, so a labelled set (long lines) costs about
    the same either way (0.50-0.70 s against 0.64-0.65 s). Memory: one block (and a frame that
    does not fit in one): ~4 MB at its peak."""
    found: Optional[set] = set() if elements is not None else None
    with open(path, "rb") as f:
        offsets = _counted_off(f, found, block)
    if offsets is not None and elements is not None:
        elements.update(found)
    return offsets


RUN_AFTER = 8  # frames in a row with the same count line after which frames are counted off in runs


def _counted_off(f: BinaryIO, found: Optional[set], block: int) -> Optional[array]:
    """:func:`regular_frame_offsets` of an open file: frames are counted off one by one until
    :data:`RUN_AFTER` in a row have the same count line, then in runs that double while every
    frame of a run has that count line, back to one by one at the first that has not (a pool of
    mixed sizes costs what one by one costs, ~2 µs a frame)."""
    offsets = array("q")
    held, base = b"", 0                 # bytes of the file from position base on, not yet counted off
    ends = np.zeros(0, dtype=np.int64)  # their line ends (positions in held)
    previous, same_in_a_row, run = b"", 0, 0
    while True:
        new = f.read(block)
        if not new:
            break
        held += new
        text = np.frombuffer(held, dtype=np.uint8)
        ends = np.concatenate([ends, np.flatnonzero(text[len(held) - len(new):] == _NEWLINE) + len(held) - len(new)])
        start, line = 0, 0            # the next frame's first byte and count line (index into ends)
        count_lines: list = []        # with elements: the frames' count lines (indices into ends), as arrays
        while line < len(ends):
            count_line = held[start:ends[line]]
            try:
                n_atoms = int(count_line)
            except ValueError:
                return None  # not an atom count (a blank line, text): the splitter decides
            if n_atoms < 0:
                return None
            step = n_atoms + 2  # lines of a frame
            if not run:  # one frame
                if line + step > len(ends):
                    break
                same_in_a_row = same_in_a_row + 1 if count_line == previous else 0
                previous = count_line
                offsets.append(base + start)
                if found is not None:
                    count_lines.append(np.array([line]))
                line += step
                start = int(ends[line - 1]) + 1
                run = 2 * RUN_AFTER if same_in_a_row >= RUN_AFTER else 0
                continue
            tried = min(run, (len(ends) - line) // step)
            if tried == 0:
                break
            heads = line + step * np.arange(tried)
            starts = np.empty(tried, dtype=np.int64)
            starts[0] = start
            starts[1:] = ends[heads[1:] - 1] + 1
            width = len(count_line)
            same = ends[heads] - starts == width
            if width and tried > 1:
                columns = np.arange(width)
                same &= (text[starts[:, None] + columns] == text[start + columns]).all(axis=1)
            kept = tried if same.all() else int(np.argmin(same))
            offsets.extend((starts[:kept] + base).tolist())
            if found is not None:
                count_lines.append(heads[:kept])
            line = int(heads[kept - 1]) + step
            start = int(ends[line - 1]) + 1
            run, same_in_a_row = (2 * run, same_in_a_row) if kept == tried else (0, 0)
        if count_lines and not _add_first_tokens(text, ends[:line], np.concatenate(count_lines),
                                                                       found):
            return None
        del text  # held is replaced: no view of it may be left
        held, base, ends = held[start:], base + start, ends[line:] - start
    if held.strip():
        return None  # a frame cut short, or a last line without its line end
    return offsets


def _add_first_tokens(text: np.ndarray, ends: np.ndarray, count_lines: np.ndarray, found: set) -> bool:
    """Add the first token of each atom line to ``found``: the lines ending at ``ends`` (whole
    frames) but the count and comment lines (the line indices ``count_lines`` and the next ones),
    read from their distinct 8-byte heads by :func:`_first_tokens`' rule (a head holds the line up
    to its line end, which then fills the rest); False when a head's token may go on past it,
    and whole lines must be read (the splitter does)."""
    atom_line = np.ones(len(ends), dtype=bool)
    atom_line[count_lines] = False
    atom_line[count_lines + 1] = False
    atom_lines = np.flatnonzero(atom_line)
    starts = ends[atom_lines - 1] + 1  # an atom line follows another line
    lengths = ends[atom_lines] - starts  # up to its line end
    heads = np.empty((len(starts), 8), dtype=np.uint8)
    for k in range(8):  # a byte past the line's end reads as a line end
        heads[:, k] = np.where(k > lengths, _NEWLINE, text[np.minimum(starts + k, len(text) - 1)])
    keys = heads.view(np.uint64).ravel()  # a head as one number
    first_of_run = np.ones(len(keys), dtype=bool)  # runs of one head (one species): their first only
    first_of_run[1:] = keys[1:] != keys[:-1]
    keys = keys[first_of_run]
    for head in map(bytes, np.unique(keys).view(np.uint8).reshape(-1, 8)):
        stripped = head.lstrip()
        fields = stripped.split(None, 1)
        if fields and len(fields[0]) < len(stripped):
            found.add(fields[0].decode(errors="replace"))
        elif fields or _NEWLINE not in head:
            return False
    return True
