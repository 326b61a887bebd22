"""A corpus of real-world mistakes, each a real file and a real CLI call, all answered cleanly.

Every case: the expected exit status (2 for bad input; 0 where a pool just skips what it cannot
use), at most 3 lines on stderr, no traceback and no "internal error", every file that existed
before the call byte-identical afterwards, and no hang (60 s per case). Where a case says so, the
answer costs at most that much CPU time (the command's own and its children's: a bound on work
done, which a busy machine does not stretch the way it stretches wall time).
Hostile files too: a pickle that runs code, a YAML alias bomb, a symbolic link loop, an output
path that is a device node or a FIFO.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import ase.io
import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import TINY_CONFIG, children_cpu_seconds, run_cli

from pace_worker.toy_data import emt_dataset, fcc_cells

META = "device: cpu\nthreads: 1\nworkers: 1\nlog_level: WARNING\n"
POTENTIAL_FILES = ("output_potential.yaml", "output_potential.yace", "output_potential.asi")


# ----------------------------------------------------------------------------- broken structures
def broken(kind: str) -> Atoms:
    """One structure with the named defect (fcc Cu otherwise), labelled with zero energy/forces."""
    atoms = fcc_cells("Cu", n=1, seed=3, rattle=0.05)[0]
    if kind == "nan_position":
        atoms.positions[1, 0] = np.nan
    elif kind == "inf_position":
        atoms.positions[2, 1] = np.inf
    elif kind == "nan_cell":
        atoms.cell[0, 0] = np.nan
    elif kind == "inf_cell":
        atoms.cell[1, 1] = np.inf
    elif kind == "parallel_vectors":
        atoms.cell = [[3.6, 0, 0], [3.6, 0, 0], [0, 0, 3.6]]
    elif kind == "zero_cell":
        atoms.cell = np.zeros((3, 3))
    elif kind == "tiny_cell":
        atoms.set_cell(np.eye(3) * 1e-6, scale_atoms=True)
    elif kind == "same_position":
        atoms.positions[1] = atoms.positions[0]
    elif kind == "no_atoms":
        atoms = Atoms(cell=[5, 5, 5], pbc=True)
    elif kind == "huge_coordinate":
        atoms.positions[0] = [1e9, 0, 0]
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0 * len(atoms), forces=np.zeros((len(atoms), 3)))
    return atoms


GEOMETRY = ("nan_position", "inf_position", "nan_cell", "inf_cell", "parallel_vectors", "zero_cell", "tiny_cell",
            "same_position", "no_atoms", "huge_coordinate")


def write_xyz(path: Path, structures) -> Path:
    ase.io.write(str(path), structures, format="extxyz")
    return path


def with_bad_line(path: Path, structures, edit: Callable[[list[str]], None]) -> Path:
    """``structures`` as extxyz, then ``edit`` applied to the lines of the file."""
    write_xyz(path, structures)
    lines = path.read_text().splitlines(keepends=True)
    edit(lines)
    path.write_text("".join(lines))
    return path


def atom_line_of_frame(lines: list[str], frame: int) -> int:
    """Index of the first atom line of ``frame``."""
    i = 0
    for _ in range(frame):
        i += int(lines[i]) + 2
    return i + 2


# ----------------------------------------------------------------------------- the corpus
@dataclass
class Case:
    command: str                      # train | sample | direct_sample | validate
    make: Callable[[Path], dict]      # writes files into the case folder; returns flag overrides
    code: int = 2
    words: tuple = ()                 # words the error line must contain
    check: Optional[Callable[[Path, subprocess.CompletedProcess], None]] = None
    extra: list = field(default_factory=list)
    cpu_seconds: Optional[float] = None  # the answer costs at most this much CPU time (hostile files: little)


def base_files(folder: Path, potential_dir: Path) -> None:
    """A good setup: dataset, pool, test set, potential, config, meta_config."""
    shutil.copy(potential_dir / "train.xyz", folder / "train.xyz")
    for name in POTENTIAL_FILES + ("test_set.xyz",):
        shutil.copy(potential_dir / name, folder / name)
    write_xyz(folder / "pool.xyz", fcc_cells("Cu", n=8, seed=21, rattle=0.12))
    (folder / "config.yaml").write_text(TINY_CONFIG)
    (folder / "meta.yaml").write_text(META)


def args_for(command: str, folder: Path, flags: dict) -> list:
    defaults = {
        "train": {"--config": folder / "config.yaml", "--meta-config": folder / "meta.yaml",
                  "--dataset": folder / "train.xyz", "--iteration": 1},
        "sample": {"--config": folder / "config.yaml", "--meta-config": folder / "meta.yaml",
                   "--candidates": folder / "pool.xyz", "--n_samples": 2, "--output": folder / "out" / "sel.xyz",
                   "--potential": folder / "output_potential.yaml"},
        "direct_sample": {"--config": folder / "config.yaml", "--meta-config": folder / "meta.yaml",
                          "--input": folder / "pool.xyz", "--output": folder / "out" / "div.xyz",
                          "--n_clusters": 2, "--no-plots": None},
        "validate": {"--config": folder / "config.yaml", "--meta-config": folder / "meta.yaml",
                     "--potential": folder / "output_potential.yace", "--output": folder / "out" / "m.json",
                     "--test-set": folder / "test_set.xyz", "--no-plots": None},
    }[command]
    merged = {**defaults, **flags}
    args = [command]
    for flag, value in merged.items():
        if value is False:  # drop a default flag
            continue
        args.append(flag)
        if value is not None:
            args.append(value)
    return args


def dataset_case(kind_writer: Callable[[Path], Path], command: str, words=()) -> Case:
    """A labelled file (train's dataset or validate's test set) written by ``kind_writer``."""
    flag = "--dataset" if command == "train" else "--test-set"
    return Case(command, lambda d: {flag: kind_writer(d)}, 2, words)


def pool_case(kind_writer: Callable[[Path], Path], command: str, code=0, words=(), skipped=None) -> Case:
    flag = "--candidates" if command == "sample" else "--input"

    def check(folder: Path, proc):
        if code != 0:
            return
        name = "sel" if command == "sample" else "div"
        report = json.loads((folder / "out" / f"{name}_report.json").read_text())
        if skipped is not None:
            assert report["pool"]["skipped"]["by_reason"] == skipped, report["pool"]
        picks = ase.io.read(str(folder / "out" / f"{name}.xyz"), ":")
        assert picks and all(np.isfinite(a.positions).all() for a in picks)
    return Case(command, lambda d: {flag: kind_writer(d)}, code, words, check)


def geometry_in_dataset(kind: str):
    return lambda d: write_xyz(d / f"data_{kind}.xyz", [*emt_dataset("Cu", n=3, seed=5), broken(kind)])


def geometry_in_pool(kind: str):
    def write(d: Path) -> Path:
        pool = fcc_cells("Cu", n=8, seed=21, rattle=0.12)
        pool.insert(3, broken(kind))
        return write_xyz(d / f"pool_{kind}.xyz", pool)
    return write


def truncated_gz(name: str, structures):
    def write(d: Path) -> Path:
        raw = d / "full.xyz"
        write_xyz(raw, structures())
        data = gzip.compress(raw.read_bytes())
        path = d / name
        path.write_bytes(data[: len(data) * 2 // 3])
        return path
    return write


def blank_line_in_frame(name: str, structures):
    def edit(lines):
        lines.insert(atom_line_of_frame(lines, 1) + 1, "\n")
    return lambda d: with_bad_line(d / name, structures(), edit)


def bad_species(name: str, structures, symbol: bytes):
    def write(d: Path) -> Path:
        path = write_xyz(d / name, structures())
        lines = path.read_bytes().splitlines(keepends=True)
        i = atom_line_of_frame([line.decode() for line in lines], 1)
        lines[i] = symbol + lines[i][2:]
        path.write_bytes(b"".join(lines))
        return path
    return write


def raw_file(name: str, content: bytes):
    def write(d: Path) -> Path:
        (d / name).write_bytes(content)
        return d / name
    return write


def labelled():
    return emt_dataset("Cu", n=4, seed=6)


def unlabelled():
    return fcc_cells("Cu", n=8, seed=21, rattle=0.12)


def bad_pickle(d: Path) -> Path:
    """A pacemaker pickle whose objects need a module that is not installed."""
    class Fake:
        pass
    Fake.__module__ = "a_module_that_is_not_installed"
    Fake.__qualname__ = Fake.__name__ = "Thing"
    import sys
    import types
    module = types.ModuleType("a_module_that_is_not_installed")
    module.Thing = Fake
    sys.modules["a_module_that_is_not_installed"] = module
    try:
        df = pd.DataFrame({"ase_atoms": [Fake()], "energy": [1.0]})
        path = d / "data.pckl.gzip"
        df.to_pickle(path, compression="gzip", protocol=4)
    finally:
        del sys.modules["a_module_that_is_not_installed"]
    return path


def config_case(command: str, text: str, words=()) -> Case:
    def make(d: Path) -> dict:
        (d / "bad_config.yaml").write_text(text)
        return {"--config": d / "bad_config.yaml"}
    return Case(command, make, 2, words)


def bytes_config(command: str, which: str) -> Case:
    def make(d: Path) -> dict:
        path = d / f"bad_{which}.yaml"
        path.write_bytes(b"cutoff: 4.5\n# \xff\xfe caf\xe9\n" if which == "config" else b"device: cpu\n# \xe9\xff\n")
        return {"--config" if which == "config" else "--meta-config": path}
    return Case(command, make, 2, ("UTF-8",))


def output_case(command: str, make_output: Callable[[Path], Path], code=2, words=(), check=None) -> Case:
    return Case(command, lambda d: {"--output": make_output(d)}, code, words, check)


def existing_dir(d: Path) -> Path:
    (d / "a_folder").mkdir()
    return d / "a_folder"


def under_a_file(d: Path) -> Path:
    (d / "a_file").write_text("x")
    return d / "a_file" / "picks.xyz"


def compressed_output(name: str, reader_suffix: str):
    def check(folder: Path, proc):
        path = folder / "out" / name
        opener = {".gz": gzip.open, ".bz2": bz2.open}[reader_suffix]
        with opener(path, "rb") as f:
            assert f.read(1)  # really compressed
        assert len(ase.io.read(str(path), ":")) >= 1  # and ASE reads it back by its name
    return check


def flag_case(command: str, flags: dict, words=()) -> Case:
    return Case(command, lambda d: dict(flags), 2, words)


def huge_energy_test_set(d: Path) -> Path:
    structures = emt_dataset("Cu", n=3, seed=7)
    atoms = structures[1]
    atoms.calc = SinglePointCalculator(atoms, energy=1e308, forces=atoms.get_forces())
    return write_xyz(d / "huge.xyz", structures)


def check_duplicates_counted(folder: Path, proc):
    report = json.loads((folder / "out" / "sel_report.json").read_text())
    assert report["pool"]["read"] == 6 and report["pool"]["duplicates"] == 5 and report["n_picked"] <= 1
    assert len(ase.io.read(str(folder / "out" / "sel.xyz"), ":", format="extxyz")) == report["n_picked"]


def check_valid_json(folder: Path, proc):
    text = (folder / "out" / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    metrics = json.loads(text)
    assert metrics["n_structures"] == 3


def build_corpus() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    # 1. non-finite or degenerate geometry: a dataset refuses it in one line, a pool skips it
    for kind in GEOMETRY:
        cases[f"train dataset {kind}"] = dataset_case(geometry_in_dataset(kind), "train", ("structure 3",))
        cases[f"validate test set {kind}"] = dataset_case(geometry_in_dataset(kind), "validate", ("structure 3",))
        reason = {"nan_position": "non_finite_position", "inf_position": "non_finite_position",
                  "nan_cell": "non_finite_cell", "inf_cell": "non_finite_cell", "parallel_vectors": "degenerate_cell",
                  "zero_cell": "degenerate_cell", "tiny_cell": "degenerate_cell", "same_position": "atoms_too_close",
                  "no_atoms": "no_atoms", "huge_coordinate": "absurd_position"}[kind]
        cases[f"sample pool {kind}"] = pool_case(geometry_in_pool(kind), "sample", skipped={reason: 1})
        cases[f"direct_sample pool {kind}"] = pool_case(geometry_in_pool(kind), "direct_sample", skipped={reason: 1})
    # 2. malformed files
    for command in ("train", "validate"):
        cases[f"{command} truncated gz"] = dataset_case(truncated_gz("data.xyz.gz", labelled), command)
        cases[f"{command} blank line in a frame"] = dataset_case(blank_line_in_frame("data.xyz", labelled), command)
        cases[f"{command} non-UTF-8 species"] = dataset_case(bad_species("data.xyz", labelled, b"\xff\xfe"), command)
        cases[f"{command} unknown element"] = dataset_case(bad_species("data.xyz", labelled, b"Xx"), command)
        cases[f"{command} empty file"] = dataset_case(raw_file("data.xyz", b""), command)
        cases[f"{command} binary garbage"] = dataset_case(raw_file("data.xyz", bytes(range(256)) * 8), command)
        cases[f"{command} pickle of a missing module"] = dataset_case(bad_pickle, command)
        cases[f"{command} dataset is a folder"] = dataset_case(existing_dir, command)
        cases[f"{command} dataset missing"] = dataset_case(lambda d: d / "nope.xyz", command, ("does not exist",))
    for command in ("sample", "direct_sample"):
        cases[f"{command} truncated gz"] = pool_case(truncated_gz("pool.xyz.gz", unlabelled), command, 2)
        cases[f"{command} blank line in a frame"] = pool_case(blank_line_in_frame("pool.xyz", unlabelled), command, 2)
        cases[f"{command} non-UTF-8 species"] = pool_case(bad_species("pool.xyz", unlabelled, b"\xff\xfe"), command,
                                                          skipped={"unreadable": 1})
        cases[f"{command} unknown element"] = pool_case(bad_species("pool.xyz", unlabelled, b"Xx"), command,
                                                        skipped={"unreadable": 1})
        cases[f"{command} lower-case element (read as ASE reads it)"] = pool_case(
            bad_species("pool.xyz", unlabelled, b"cu"), command, skipped={})
        cases[f"{command} empty file"] = pool_case(raw_file("pool.xyz", b""), command, 2)
        cases[f"{command} binary garbage"] = pool_case(raw_file("pool.xyz", bytes(range(256)) * 8), command, 2)
        cases[f"{command} pool is a folder"] = pool_case(existing_dir, command, 2)
        cases[f"{command} pool missing"] = pool_case(lambda d: d / "nope.xyz", command, 2, ("does not exist",))
    cases["validate lower-case element (read as ASE reads it)"] = Case(
        "validate", lambda d: {"--test-set": bad_species("data.xyz", labelled, b"cu")(d)}, 0)
    cases["direct_sample identical structures"] = pool_case(
        lambda d: write_xyz(d / "same.xyz", [fcc_cells("Cu", n=1, seed=1)[0]] * 6), "direct_sample", 2,
        ("identical",))
    cases["sample identical structures"] = Case(
        "sample", lambda d: {"--candidates": write_xyz(d / "same.xyz", [fcc_cells("Cu", n=1, seed=1)[0]] * 6)}, 0,
        check=check_duplicates_counted)
    for command in ("train", "sample", "direct_sample", "validate"):
        cases[f"{command} non-UTF-8 config"] = bytes_config(command, "config")
        cases[f"{command} non-UTF-8 meta_config"] = bytes_config(command, "meta")
    # 3. config values of the wrong type or range never reach the science
    for text, key in (("seed: -50\n", "seed"), ("cutoff: .nan\n", "cutoff"), ("cutoff: 0.01\n", "cutoff"),
                      ("fit: {loss: {kappa: abc}}\n", "fit.loss.kappa"), ("fit: {loss: {kappa: 2}}\n", "kappa"),
                      ("fit: {optimizer: NotAnOptimizer}\n", "fit.optimizer"), ("fit: {maxiter: -1}\n", "maxiter"),
                      ("backend: {batch_size: 0}\n", "batch_size"), ("data: {test_size: -0.1}\n", "test_size"),
                      ("fit: {max_time: .inf}\n", "max_time")):
        cases[f"train config {text.strip()}"] = config_case("train", TINY_CONFIG.split("fit:")[0] + text, (key,))
    for text, key in (("sample: {seed: -3}\n", "sample.seed"), ("sample: {buffer_size: 0}\n", "buffer_size"),
                      ("sample: {gamma_lo: abc}\n", "gamma_lo"), ("sample: {gama_lo: 2}\n", "gamma_lo")):
        cases[f"sample config {text.strip()}"] = config_case("sample", text, (key,))
    for text, key in (("direct_sample: {descriptor: {cutoff: 0.01}}\n", "cutoff"),
                      ("direct_sample: {descriptor: {nradmax_by_orders: [], lmax_by_orders: []}}\n", "nradmax"),
                      ("direct_sample: {birch_threshold: .inf}\n", "birch_threshold"),
                      ("direct_sample: {seed: -1}\n", "seed")):
        cases[f"direct_sample config {text.strip()}"] = config_case("direct_sample", text, (key,))
    cases["validate config validate: {n_worst: -2}"] = config_case("validate", "validate: {n_worst: -2}\n",
                                                                   ("n_worst",))
    cases["train --iteration 99999999999999999999"] = flag_case("train", {"--iteration": "99999999999999999999"},
                                                                ("--iteration",))
    cases["train --iteration -1"] = flag_case("train", {"--iteration": "-1"}, ("--iteration",))
    # 4. output paths
    for command in ("sample", "direct_sample", "validate"):
        cases[f"{command} --output is a folder"] = output_case(command, existing_dir, 2, ("folder",))
        cases[f"{command} --output under a file"] = output_case(command, under_a_file, 2, ("is a file",))
    cases["train --output-dir is a file"] = Case("train", lambda d: {"--output-dir": raw_file("x", b"x")(d)}, 2,
                                                 ("is a file",))
    cases["sample --output .xyz.gz is compressed"] = output_case(
        "sample", lambda d: d / "out" / "sel.xyz.gz", 0, check=compressed_output("sel.xyz.gz", ".gz"))
    cases["direct_sample --output .xyz.bz2 is compressed"] = output_case(
        "direct_sample", lambda d: d / "out" / "div.xyz.bz2", 0, check=compressed_output("div.xyz.bz2", ".bz2"))
    # 6. numbers and flags
    cases["validate energy 1e308 gives valid JSON"] = Case("validate", lambda d: {"--test-set": huge_energy_test_set(d)},
                                                           0, check=check_valid_json)
    for command, flag in (("sample", "--seed"), ("direct_sample", "--seed")):
        cases[f"{command} {flag} -1"] = flag_case(command, {flag: "-1"}, ("--seed", "--help"))
    cases["sample --n_samples abc"] = flag_case("sample", {"--n_samples": "abc"}, ("--n_samples", "--help"))
    cases["sample --n_samples 0"] = flag_case("sample", {"--n_samples": "0"}, ("--n_samples",))
    cases["direct_sample --n_clusters x"] = flag_case("direct_sample", {"--n_clusters": "x"}, ("--n_clusters",))
    cases["direct_sample --n_clusters 0"] = flag_case("direct_sample", {"--n_clusters": "0"}, ("--n_clusters",))
    cases["train --iteration one"] = flag_case("train", {"--iteration": "one"}, ("--iteration", "--help"))
    for command in ("train", "sample", "direct_sample", "validate"):
        cases[f"{command} unknown flag"] = flag_case(command, {"--frobnicate": "1"}, ("--frobnicate", "--help"))
    cases["train missing --dataset"] = flag_case("train", {"--dataset": False}, ("--dataset", "--help"))
    cases["sample missing --candidates"] = flag_case("sample", {"--candidates": False}, ("--candidates",))
    cases["direct_sample missing --input"] = flag_case("direct_sample", {"--input": False}, ("--input",))
    cases["validate missing --potential"] = flag_case("validate", {"--potential": False}, ("--potential",))
    for command in ("sample", "direct_sample", "validate"):
        cases[f"{command} malformed --scheduler"] = flag_case(command, {"--scheduler": "localhost:8786:x"},
                                                              ("--scheduler", "tcp://"))
    cases["sample --scheduler without a port"] = flag_case("sample", {"--scheduler": "tcp://localhost"},
                                                           ("--scheduler",))
    # 7. an active set that belongs to another potential
    cases["sample --asi of another potential"] = Case("sample", lambda d: {"--asi": other_asi(d)}, 2, ("not the one",))
    cases["validate --asi of another potential"] = Case("validate", lambda d: {"--asi": other_asi(d)}, 2,
                                                        ("not the one",))
    add_issue21_cases(cases)
    return cases


# ----------------------------------------------------------------------------- hostile files (issue 21)
def truncated_potential(d: Path) -> Path:
    """The potential cut at a line boundary inside its radial (rank-1) functions: pyace loads it
    (with fewer functions); pacemaker used to fail 15 s into the fit."""
    lines = (d / "output_potential.yaml").read_text().splitlines(keepends=True)
    rank1 = [i for i, line in enumerate(lines) if re.search(r"nr: \[\d+\],", line)]
    path = d / "cut.yaml"
    path.write_text("".join(lines[:rank1[-1]]))
    return path


def pickle_with_none(d: Path) -> Path:
    structures = emt_dataset("Cu", n=3, seed=6)
    df = pd.DataFrame({"ase_atoms": [structures[0], None, structures[2]], "energy": [-1.0, -2.0, -3.0],
                       "forces": [s.get_forces() for s in structures]})
    df.to_pickle(d / "none.pckl.gzip", compression="gzip")
    return d / "none.pckl.gzip"


class RunsCode:
    """What a hostile pickle holds: unpickling it calls ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def pickle_that_runs_code(d: Path) -> Path:
    df = pd.DataFrame({"ase_atoms": [RunsCode(d / "PWNED")], "energy": [-1.0]})
    df.to_pickle(d / "evil.pckl.gzip", compression="gzip")
    return d / "evil.pckl.gzip"


def check_no_code_ran(folder: Path, proc):
    assert not (folder / "PWNED").exists(), "the pickle ran code"


def alias_bomb(levels: int = 9) -> str:
    """Billion laughs: nine levels of ten aliases stand for 10^9 strings."""
    text = "lol: &l0 [" + ", ".join(['"lol"'] * 10) + "]\n"
    for level in range(1, levels):
        text += f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]\n"
    return text + f"experiment: {{bomb: *l{levels - 1}}}\n"


def bomb_file(name: str, flag: str):
    def make(d: Path) -> dict:
        (d / name).write_text(alias_bomb())
        return {flag: d / name}
    return make


def symlink_loop(name: str):
    def make(d: Path) -> Path:
        os.symlink(name, d / name)  # a link to itself
        return d / name
    return make


def special_file(kind: str, name: str):
    """A character device (the numbers of /dev/full) or a FIFO at ``out/name``, made here."""
    def make(d: Path) -> Path:
        (d / "out").mkdir(exist_ok=True)
        path = d / "out" / name
        if kind == "device":
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 7))
        else:
            os.mkfifo(path)
        return path
    return make


def still_special(*names: str):
    def check(folder: Path, proc):
        for name in names:
            mode = os.lstat(folder / name).st_mode
            assert stat.S_ISCHR(mode) or stat.S_ISFIFO(mode), f"{name} was replaced"
    return check


def two_systems_pool(d: Path) -> Path:
    pool = fcc_cells("Cu", n=6, seed=21, rattle=0.12) + fcc_cells("Ag", n=6, seed=22, rattle=0.12)
    return write_xyz(d / "two.xyz", pool)


def check_one_pick(folder: Path, proc):
    report = json.loads((folder / "out" / "div_report.json").read_text())
    assert report["n_picked"] == 1 and len(ase.io.read(str(folder / "out" / "div.xyz"), ":")) == 1
    assert sorted(s["n_clusters"] for s in report["systems"]) == [0, 1]


def add_issue21_cases(cases: dict[str, Case]) -> None:
    # 1, 2: a damaged potential is found before any work, whichever command is given it
    cases["train --initial-potential cut short"] = Case(
        "train", lambda d: {"--initial-potential": truncated_potential(d)}, 2, ("--initial-potential", "incomplete"),
        cpu_seconds=30)
    for command in ("sample", "direct_sample", "validate"):
        cases[f"{command} --potential cut short"] = Case(
            command, lambda d: {"--potential": truncated_potential(d)}, 2, ("cut.yaml", "incomplete"))
    # 3, 4: a path the user wrote down is never replaced by a default, and its error names where it came from
    cases["validate config validate.test_set missing"] = Case(
        "validate", lambda d: (d / "v.yaml").write_text("validate: {test_set: nope.xyz}\n") and
        {"--config": d / "v.yaml", "--test-set": False}, 2, ("nope.xyz", "validate.test_set"))
    cases["validate --test-set missing"] = Case("validate", lambda d: {"--test-set": d / "nope.xyz"}, 2,
                                                ("test set", "nope.xyz", "--test-set"))
    cases["train config data.test_filename missing"] = Case(
        "train", lambda d: (d / "t.yaml").write_text(TINY_CONFIG.replace("data: {test_size: 0.2}",
                                                                         "data: {test_filename: nope.xyz}")) and
        {"--config": d / "t.yaml"}, 2, ("nope.xyz", "data.test_filename"))
    # 5, 8: pickles
    for command, flag in (("train", "--dataset"), ("validate", "--test-set")):
        cases[f"{command} pickle with ase_atoms None"] = Case(command, lambda d, f=flag: {f: pickle_with_none(d)}, 2,
                                                              ("structure 1", "ase_atoms"))
        cases[f"{command} pickle that runs code"] = Case(command, lambda d, f=flag: {f: pickle_that_runs_code(d)}, 2,
                                                         ("evil.pckl.gzip", "system", "refused"), check_no_code_ran)
    # 7: an output path that is not a regular file is never replaced
    cases["sample --output is a character device"] = output_case(
        "sample", special_file("device", "sel.xyz"), 2, ("character device",), still_special("out/sel.xyz"))
    cases["direct_sample report is a FIFO"] = Case(
        "direct_sample", lambda d: special_file("fifo", "div_report.json")(d) and {}, 2, ("div_report.json", "FIFO"),
        still_special("out/div_report.json"))
    cases["validate CSV is a character device"] = Case(
        "validate", lambda d: special_file("device", "m_per_structure.csv")(d) and {}, 2,
        ("m_per_structure.csv", "character device"), still_special("out/m_per_structure.csv"))
    cases["train output_potential.yace is a character device"] = Case(
        "train", lambda d: (d / "output_potential.yace").unlink() or
        os.mknod(d / "output_potential.yace", 0o600 | stat.S_IFCHR, os.makedev(1, 7)) or {}, 2,
        ("output_potential.yace", "character device"), still_special("output_potential.yace"), cpu_seconds=30)
    # 9: YAML alias bombs cost one line, not the machine
    for command in ("train", "sample", "direct_sample", "validate"):
        cases[f"{command} config.yaml alias bomb"] = Case(command, bomb_file("bomb.yaml", "--config"), 2,
                                                          ("bomb.yaml", "alias"), cpu_seconds=5)
    cases["sample meta_config alias bomb"] = Case("sample", bomb_file("bomb_meta.yaml", "--meta-config"), 2,
                                                  ("bomb_meta.yaml", "alias"), cpu_seconds=5)
    # 11: a symbolic link loop as any input or output
    for command, flag in (("train", "--dataset"), ("sample", "--candidates"), ("direct_sample", "--input"),
                          ("validate", "--test-set"), ("sample", "--potential"), ("validate", "--potential"),
                          ("train", "--config"), ("direct_sample", "--meta-config"), ("sample", "--asi")):
        cases[f"{command} {flag} is a symlink loop"] = Case(
            command, lambda d, f=flag: {f: symlink_loop("loop.xyz" if f not in ("--potential",) else "loop.yaml")(d)},
            2, ("loop", "symbolic link loop"), cpu_seconds=30)
    cases["sample --output is a symlink loop"] = output_case("sample", lambda d: symlink_loop("loop.xyz")(d), 2,
                                                             ("symbolic link loop",))
    # 12: fewer clusters than chemical systems is a valid request
    cases["direct_sample --n_clusters 1 on two chemical systems"] = Case(
        "direct_sample", lambda d: {"--input": two_systems_pool(d), "--n_clusters": 1}, 0, check=check_one_pick)


def other_asi(d: Path) -> Path:
    """An .asi of the same shape that was not built for this potential."""
    data = dict(np.load(d / "output_potential.asi"))
    path = d / "other.asi"
    with open(path, "wb") as f:
        np.savez(f, **{el: m * 1.5 for el, m in data.items()})
    return path


CORPUS = build_corpus()


def test_the_corpus_has_at_least_100_cases():
    assert len(CORPUS) >= 100, len(CORPUS)


def sha_all(folder: Path) -> dict:
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_input(name, cold_run, tmp_path):
    case = CORPUS[name]
    base_files(tmp_path, cold_run["root"])
    flags = case.make(tmp_path)
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "earlier.txt").write_text("an earlier output")
    before = sha_all(tmp_path)
    cpu_before = children_cpu_seconds()
    proc = run_cli(*args_for(case.command, tmp_path, flags), timeout=60)
    cpu = children_cpu_seconds() - cpu_before
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == case.code, (proc.returncode, proc.stderr[-3000:])
    if case.cpu_seconds is not None:
        assert cpu < case.cpu_seconds, f"the answer cost {cpu:.1f} s of CPU time"
    assert len(lines) <= 3, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    if case.code == 2:
        for word in case.words:
            assert word in lines[-1], lines[-1]
    after = sha_all(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"
    if case.code != 0:
        assert set(after) == set(before), f"new files after a refused call: {set(after) - set(before)}"
    if case.check is not None:
        case.check(tmp_path, proc)
