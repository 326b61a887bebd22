"""libAtoms' C extxyz parser against ASE's reader, the reference: on every kind of file the project
reads, the structures are equal field for field (numbers, positions, cell, pbc, info with its
types and order, arrays with their dtypes, the calculator's labels), the C path is taken where
it should be (else the test would pass on ASE alone), and every frame on which the two readers
disagree goes to ASE."""
from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import fcc111, molecule

from pace_worker.files.c_extxyz import parse_frames_c
from pace_worker.files.frame_text import file_frame_blocks
from pace_worker.files.frames import PoolChunk, parse_frame_texts
from pace_worker.files.structures import read_labelled_structures
from pace_worker.toy_data import emt_dataset, fcc_cells

REPO = Path(__file__).resolve().parent.parent


def assert_same_structures(expected: list, got: list) -> None:
    assert len(expected) == len(got)
    for k, (a, b) in enumerate(zip(expected, got)):
        assert (a.numbers == b.numbers).all(), k
        assert np.array_equal(a.positions, b.positions), k
        assert np.array_equal(a.cell.array, b.cell.array), k
        assert (a.pbc == b.pbc).all(), k
        assert list(a.info) == list(b.info) and a.info == b.info, (k, a.info, b.info)
        assert [type(v) for v in a.info.values()] == [type(v) for v in b.info.values()], k
        assert list(a.arrays) == list(b.arrays), k
        for name in a.arrays:
            assert a.arrays[name].dtype == b.arrays[name].dtype and np.array_equal(a.arrays[name], b.arrays[name]), \
                (k, name)
        ra, rb = (a.calc.results if a.calc else {}), (b.calc.results if b.calc else {})
        assert list(ra) == list(rb), k
        for name in ra:
            assert type(ra[name]) is type(rb[name]) and _equal(ra[name], rb[name]), (k, name)


def _equal(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return np.array_equal(a, b, equal_nan=True)


def varied_pool() -> list:
    """Unlabelled and labelled cells, info of every plain type, extra numeric columns, slabs and a
    molecule: what MD snapshots and datasets written by ASE carry."""
    cells = fcc_cells("Cu", n=6, seed=3, strain=0.05, rattle=0.1, repeat=(2, 2, 2))
    for k, atoms in enumerate(cells):
        atoms.info.update(step=1000 * k, temperature=300.5 + k, thermostat="nose_hoover", equilibrated=k % 2 == 0)
        atoms.set_tags(np.arange(len(atoms)) % 3)
        atoms.new_array("local_weight", np.linspace(0.1, 1.0, len(atoms)))
    labelled = emt_dataset("Cu", n=4, seed=4, repeat=(2, 2, 2))
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    slab.info["config_type"] = "slab"
    cluster = molecule("H2O")
    return cells + labelled + [slab, cluster]


def file_frame_texts(path: Path) -> list[bytes]:
    return [text for block in file_frame_blocks(path) for text in block]


def write_frames(path: Path, structures: list) -> list[bytes]:
    ase.io.write(path, structures, format="extxyz")
    return file_frame_texts(path)


def test_same_structures_as_ase_and_the_c_path_is_taken(tmp_path):
    structures = varied_pool()
    texts = write_frames(tmp_path / "pool.xyz", structures)
    expected = ase.io.read(tmp_path / "pool.xyz", index=":")
    for k, text in enumerate(texts):  # every one of these frames is read by C
        assert parse_frames_c([text]) is not None, (k, text.split(b"\n")[1][:200])
    assert_same_structures(expected, parse_frames_c(texts))
    chunk = PoolChunk(0, len(texts), path=str(tmp_path / "pool.xyz"))
    assert_same_structures(expected, chunk.parse())
    compressed_text = PoolChunk(0, len(texts), text=b"".join(texts))  # a chunk of a compressed pool
    assert_same_structures(expected, compressed_text.parse())


def test_labels_without_snapshots_are_the_same_labels(tmp_path):
    """``validate``'s workers parse without the calculator's copy of each structure: the same
    structures and labels, and the labels still read through ASE's calculator interface."""
    structures = varied_pool()
    texts = write_frames(tmp_path / "pool.xyz", structures)
    with_snapshots = parse_frames_c(texts)
    without = PoolChunk(0, len(texts), path=str(tmp_path / "pool.xyz")).read(label_snapshots=False)
    assert_same_structures(with_snapshots, without)
    labelled = [k for k, atoms in enumerate(without) if atoms.calc is not None]
    assert len(labelled) == 4  # the EMT-labelled cells
    for k in labelled:
        atoms = without[k]
        assert atoms.calc.atoms is atoms and with_snapshots[k].calc.atoms is not with_snapshots[k]
        assert atoms.get_potential_energy() == with_snapshots[k].get_potential_energy()
        assert np.array_equal(atoms.get_forces(), with_snapshots[k].get_forces())


@pytest.mark.parametrize("name", ["Si_training.xyz", "Si_test.xyz"])
def test_bundled_dft_data_read_alike(name):
    path = REPO / "examples" / "si" / "data" / name
    parsed = parse_frames_c(file_frame_texts(path))
    assert parsed is not None
    assert_same_structures(ase.io.read(path, index=":"), parsed)
    labelled = read_labelled_structures(path)  # the dataset reader takes the C path too
    assert_same_structures(parsed, labelled.atoms)


DISAGREEING = {  # comment-line tokens ASE and the C grammar read differently (measured)
    "nan energy": "energy=nan",
    "inf": "energy=inf",
    "underscored number": "step=1_000",
    "quoted number": 'step="3"',
    "long integer": "step=12345678901234",
    "flag without a value": "converged",
    "fortran exponent": "energy=1.0d3",
    "array in info": 'stress="1 2 3 4 5 6"',
    "integer stress": 'stress="1 0 0 0 1 0 0 0 1"',
    "other array": 'dipole="0.1 0.2 0.3"',
    "single quotes": "name='a b'",
    "upper-case truth": "flag=TRUE",
}


@pytest.mark.parametrize("token", DISAGREEING.values(), ids=DISAGREEING.keys())
def test_frames_the_readers_disagree_on_go_to_ase(token, tmp_path, capfd):
    text = ("2\nLattice=\"4 0 0 0 4 0 0 0 4\" Properties=species:S:1:pos:R:3 " + token +
            " pbc=\"T T T\"\nCu 0 0 0\nCu 1.8 1.8 0\n").encode()
    assert parse_frames_c([text]) is None
    path = tmp_path / "one.xyz"
    path.write_bytes(text)
    try:
        expected = ase.io.read(path, index=":")
    except Exception:
        expected = None
    if expected is not None:
        assert_same_structures(expected, parse_frame_texts([text]))
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("body", [
    "Cu 0 0 0\nCu 1.8 1.8 1.2.3\n",            # a malformed number
    "Cu 0 0 0\nXx 1.8 1.8 0\n",                # an unknown element
    "Cu 0 0 0\n",                              # a frame cut short
    "Cu 0 0 0 0\nCu 1.8 1.8 0 0\n",            # more columns than the Properties say
])
def test_broken_frames_go_to_ase_quietly(body, capfd):
    text = ("2\nLattice=\"4 0 0 0 4 0 0 0 4\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"\n" + body).encode()
    assert parse_frames_c([text]) is None
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_long_integer_column_goes_to_ase(tmp_path):
    """The C parser would wrap it to 32 bits silently; ASE refuses it (its integer columns are
    32-bit too), and that refusal is what the commands report."""
    atoms = fcc_cells("Cu", n=1, seed=0)[0]
    atoms.new_array("atom_id", np.arange(len(atoms)) + 4_000_000_000)
    texts = write_frames(tmp_path / "ids.xyz", [atoms])
    assert parse_frames_c(texts) is None
    with pytest.raises(OverflowError):
        parse_frame_texts(texts)


def test_long_integer_scan_answers_as_the_token_pattern():
    """The scan for integer tokens of ten digits or more gives the regular expression's answer
    (its look-behind tried at every byte was ~80 µs per frame) on random text built from digits,
    signs, dots, letters, underscores, spaces, quotes and other bytes."""
    import random

    from pace_worker.files.c_extxyz import _LONG_INTEGER, has_long_integer

    rng = random.Random(0)
    others = b"+-._ aZ\n\"=eE:\xff\x00"
    found = 0
    for _ in range(100_000):
        text = bytes(rng.choice(others) if rng.random() < 0.35 else rng.choice(b"0123456789")
                     for _ in range(rng.randint(0, 30)))
        expected = _LONG_INTEGER.search(text) is not None
        assert has_long_integer(text) == expected, text
        found += expected
    assert 1_000 < found < 99_000  # both answers were tested often
    assert has_long_integer(b"x 12345678901 y") and not has_long_integer(b"1.2345678901234 -5.4e+00")


def test_ase_reader_switch_reads_everything_with_ase(tmp_path, monkeypatch):
    texts = write_frames(tmp_path / "pool.xyz", fcc_cells("Cu", n=2, seed=5))
    assert parse_frames_c(texts) is not None
    monkeypatch.setenv("PACE_WORKER_ASE_READER", "1")
    assert parse_frames_c(texts) is None
    assert_same_structures(ase.io.read(tmp_path / "pool.xyz", index=":"), parse_frame_texts(texts))


def test_a_dataset_with_one_frame_for_ase_is_read_whole_by_ase(tmp_path):
    structures = emt_dataset("Cu", n=3, seed=6, repeat=(2, 2, 2))
    structures[-1].info["note"] = "1_000"  # a token the two readers read differently, in the last frame
    path = tmp_path / "data.xyz"
    texts = write_frames(path, structures)
    assert parse_frames_c(texts[:-1]) is not None and parse_frames_c(texts[-1:]) is None
    assert_same_structures(ase.io.read(path, index=":"), read_labelled_structures(path).atoms)
