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
