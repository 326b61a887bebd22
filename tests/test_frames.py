"""Splitting extxyz pools into chunks for the workers: plain and compressed files give the same
structures, and a broken frame is named."""
from __future__ import annotations

import gzip

import ase.io
import numpy as np
import pytest
from conftest import write_dataset

from pace_worker.errors import InputError
from pace_worker.files.frames import frame_offsets, pool_chunks, read_selected
from pace_worker.toy_data import fcc_cells


@pytest.fixture
def pool_files(tmp_path):
    pool = fcc_cells("Cu", n=11, seed=4, rattle=0.05)
    plain = write_dataset(tmp_path / "pool.xyz", pool)
    packed = tmp_path / "pool.xyz.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    return pool, plain, packed


def test_plain_and_compressed_chunks_hold_the_same_structures(pool_files):
    _, plain, packed = pool_files
    pool = ase.io.read(plain, ":")  # what ASE reads from the whole file
    assert len(frame_offsets(plain)) == len(frame_offsets(packed)) == 11
    for path in (plain, packed):
        chunks = list(pool_chunks(path, 4))
        assert [(c.first_index, len(c)) for c in chunks] == [(0, 4), (4, 4), (8, 3)]
        read = [atoms for chunk in chunks for atoms in chunk.read()]
        assert all(np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)
                   for a, b in zip(read, pool))
        picked = read_selected(path, [9, 2], frame_offsets(path))
        assert sorted(picked) == [2, 9] and np.array_equal(picked[9].positions, pool[9].positions)


def test_a_broken_frame_of_a_compressed_pool_is_named(pool_files, tmp_path):
    pool, plain, _ = pool_files
    lines = plain.read_text().splitlines(keepends=True)
    per_frame = len(pool[0]) + 2
    lines[3 * per_frame] = "three\n"  # structure 3's atom count
    broken = tmp_path / "broken.xyz.gz"
    broken.write_bytes(gzip.compress("".join(lines).encode()))
    with pytest.raises(InputError, match=r"structure 3 does not start with an atom count"):
        list(pool_chunks(broken, 2))
    assert len(ase.io.read(plain, ":")) == 11  # the original is untouched


def test_the_quick_shape_check_never_lets_through_what_the_full_checks_refuse(monkeypatch):
    """``shape_problem`` passes the common structure after a few float operations; on cells and
    positions at and around every limit (and non-finite ones) it gives exactly the full checks'
    answer."""
    from ase import Atoms

    from pace_worker.files import structures as st

    rng = np.random.default_rng(0)
    cases = []
    for _ in range(300):
        cell = np.diag(rng.uniform(0.3, 12.0, 3)) + rng.normal(0.0, 2.0, (3, 3))
        cases.append((cell, rng.uniform(-5, 5, (4, 3))))
    for scale in (0.49, 0.4999999, 0.5, 0.5000001, 0.505, 0.51, 0.52):  # around MIN_CELL_WIDTH
        cases.append((np.diag([scale, 5.0, 5.0]), np.zeros((2, 3))))
        cases.append((np.array([[5.0, 0, 0], [0, 5.0, 0], [4.0, 4.0, scale]]), np.zeros((2, 3))))  # thin, tilted
    for sine in (0.9e-3, 1e-3, 1.005e-3, 1.02e-3, 1.1e-3):  # around MIN_CELL_SINE: a nearly parallel pair
        b = np.array([np.sqrt(1 - sine ** 2), sine, 0.0]) * 600.0
        cases.append((np.array([[600.0, 0, 0], b, [0, 0, 600.0]]), np.zeros((2, 3))))
    for coordinate in (4.9e5, 5e5, 5.1e5, 1e6, 1.01e6, np.nan, np.inf, -np.inf):
        cases.append((np.eye(3) * 10.0, np.array([[0.0, 0, 0], [coordinate, 0, 0]])))
    for bad in (np.nan, np.inf):
        cell = np.eye(3) * 10.0
        cell[1, 2] = bad
        cases.append((cell, np.zeros((2, 3))))
    structures = []
    for cell, positions in cases:
        for pbc in (True, False, [True, True, False]):
            structures.append(Atoms("Cu" * len(positions), positions=positions, cell=cell, pbc=pbc))
    quick = [st.shape_problem(atoms) for atoms in structures]
    assert sum(st._plainly_sound(atoms.positions, atoms.cell.array, atoms.pbc) for atoms in structures) > 300
    monkeypatch.setattr(st, "_plainly_sound", lambda *args: False)
    full = [st.shape_problem(atoms) for atoms in structures]
    assert quick == full
    assert sum(problem is not None for problem in full) > 60  # the cases do reach every limit


def test_the_elements_scan_finds_each_lines_first_token_as_split_does():
    """``frame_offsets(..., elements=)`` looks at the distinct heads of a frame's atom lines, not at
    every line; on lines of every shape it finds what ``bytes.split`` finds line by line."""
    from pace_worker.files.frame_text import _first_tokens

    rng = np.random.default_rng(1)
    blanks = [b" ", b"\t", b"\r", b"\x0b", b"\x0c"]
    for _ in range(2000):
        lines = []
        for _ in range(int(rng.integers(1, 6))):
            lead = b"".join(rng.choice(blanks) for _ in range(int(rng.integers(0, 10))))
            token = bytes(rng.choice(list(b"SiCuAlxyz0123."), int(rng.integers(0, 12))))
            tail = b"" if rng.random() < 0.2 else rng.choice([b" 1.0 2.0 3.0", b"\t0 0 0", b""])
            lines.append(lead + token + tail + (b"" if rng.random() < 0.1 else b"\n"))
        expected = {fields[0] for fields in (line.split(None, 1) for line in lines) if fields}
        assert _first_tokens(lines) == expected, lines


def _random_pool_text(rng) -> tuple[bytes, bool, bool]:
    """An extxyz-like text of random frames, whether every frame is regular (count lines of
    digits, no blank line between frames, nothing cut short, a line end after the last line), and
    whether an atom line's first token may go on past its first 8 bytes. Runs of frames share an
    atom count, as MD pools do; atom lines have every shape of first token."""
    blanks = [b" ", b"\t", b"\r"]
    chunks, regular, long_heads = [], True, False
    n_atoms = int(rng.integers(0, 5))
    for _ in range(int(rng.integers(1, 40))):
        if rng.random() < 0.3:
            n_atoms = int(rng.integers(0, 5))
        count = str(n_atoms).encode()
        if rng.random() < 0.1:
            count = b" " + count + b"  "  # int() reads it: still regular
        lines = [count + b"\n", b'Lattice="1 0 0 0 1 0 0 0 1" pbc="T T T"\n']
        for _ in range(n_atoms):
            lead = b"".join(rng.choice(blanks) for _ in range(int(rng.integers(0, 4) if rng.random() < 0.3 else 0)))
            token = rng.choice(list(b"SiCuAl"), int(rng.integers(1, 12 if rng.random() < 0.01 else 3))).astype(np.uint8)
            token = token.tobytes()
            long_heads |= len(lead + token) >= 8
            lines.append(lead + token + rng.choice([b" 1.0 2.0 3.0", b"\t0 0 0", b"", b"  7"]) + b"\n")
        if rng.random() < 0.005:
            lines.insert(0, b"\n")  # a blank line between frames: the splitter skips it
            regular = False
        chunks.extend(lines)
    text = b"".join(chunks)
    if rng.random() < 0.1:
        text = text[:-1]  # no line end after the last line
        regular = False
    elif rng.random() < 0.1:
        text = text[:int(rng.integers(0, len(text)))]  # cut anywhere
        regular = False
    elif rng.random() < 0.05:
        text += b"garbage\n"
        regular = False
    return text, regular, long_heads


@pytest.mark.parametrize("run_after", [1, 8])
def test_the_numpy_scan_finds_the_frames_and_elements_the_splitter_finds(tmp_path, monkeypatch, run_after):
    """``regular_frame_offsets`` (NumPy over blocks of the file) gives the offsets and elements of
    ``split_frames`` on 750 random files, with blocks of a few bytes to thousands (frames and
    lines across block ends); on a file the splitter refuses, or reads past an irregularity, it
    gives None, never other offsets; ``frame_offsets`` equals the splitter on every file. Frames
    are counted off in runs from the second frame of a count on (``run_after`` 1) or as by default."""
    from pace_worker.files import frame_text
    from pace_worker.files.frame_text import regular_frame_offsets, split_frames

    monkeypatch.setattr(frame_text, "RUN_AFTER", run_after)  # runs from the second frame on, or the default
    rng = np.random.default_rng(7 + run_after)
    path = tmp_path / "pool.xyz"
    fast = fast_with_elements = 0
    for _ in range(750):
        text, regular, long_heads = _random_pool_text(rng)
        path.write_bytes(text)
        expected_elements: set = set()
        try:
            with open(path, "rb") as f:
                expected = [o for o, _ in split_frames(f, path, "pool", keep_text=False, elements=expected_elements)]
        except InputError:
            expected = None
        block = int(rng.choice([5, 13, 64, 4096]))
        without_elements = regular_frame_offsets(path, block=block)
        if without_elements is not None:  # (an irregular file cut at a frame's end is regular)
            fast += 1
            assert expected is not None and list(without_elements) == expected, text
        else:
            assert not regular, text
        elements: set = set()
        got = regular_frame_offsets(path, elements, block=block)
        if got is not None:
            fast_with_elements += 1
            assert expected is not None and list(got) == expected and elements == expected_elements, text
        else:
            assert not regular or long_heads, text
            assert not elements
        if expected is not None:
            assert list(frame_offsets(path, "pool")) == expected
    assert fast > 450 and fast_with_elements > 375


def test_a_read_error_during_the_numpy_scan_is_one_input_error(tmp_path, monkeypatch):
    """A plain pool whose reading fails (an I/O error of the disk) is named in one line, as the
    line-by-line splitter names it, not an internal error."""
    import errno

    from pace_worker.files import frame_text

    path = tmp_path / "pool.xyz"
    ase.io.write(path, fcc_cells(n=3, seed=0), format="extxyz")

    def failing_read(f, found, block):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(frame_text, "_counted_off", failing_read)
    with pytest.raises(InputError, match=r"pool '.*pool\.xyz' is damaged \(OSError"):
        frame_offsets(path, "pool")
