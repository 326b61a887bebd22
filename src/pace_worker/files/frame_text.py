"""Frame texts of an extxyz file, split without parsing: the atom-count line, the comment line and
one line per atom. :func:`split_frames` is the one splitter; :func:`frame_texts_at` reads
``count`` frames from a byte offset; :func:`file_frame_blocks` all frames of a plain file, in blocks.
"""
from __future__ import annotations

import itertools
import operator
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

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
