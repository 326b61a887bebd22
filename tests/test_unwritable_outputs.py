"""Outputs that cannot be replaced, and a disk that fills up: found before the work where they
can be, one line either way, the earlier outputs byte-identical.

These need what root in a container has: ``chattr +i`` (an immutable file) and ``mount -t
tmpfs`` (a read-only and a full file system of our own). Where the machine does not allow one,
its tests are skipped and say why. "Before the work" is checked by what is left (no iteration
folder) and by CPU time spent, not by wall time, which a busy machine stretches.
"""
from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import META, TINY_CONFIG, children_cpu_seconds, run_cli

from pace_worker.toy_data import fcc_cells

POTENTIAL_FILES = ("output_potential.yaml", "output_potential.yace", "output_potential.asi", "train_metrics.json",
                   "test_set.xyz")


def _works(*command) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def can(tmp_path_factory) -> dict:
    """Which of chattr +i and mounting a tmpfs this machine allows."""
    probe = tmp_path_factory.mktemp("probe")
    (probe / "f").write_text("x")
    chattr = shutil.which("chattr") is not None and _works("chattr", "+i", str(probe / "f"))
    if chattr:
        _works("chattr", "-i", str(probe / "f"))
    (probe / "m").mkdir()
    mount = _works("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe / "m"))
    if mount:
        _works("umount", str(probe / "m"))
    return {"chattr": chattr, "mount": mount}


@contextlib.contextmanager
def immutable(path: Path):
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def sha_all(folder: Path) -> dict:
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def one_line(proc, code: int, *words) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def fill(folder: Path, leave_kib: int) -> None:
    """Fill a tmpfs until about ``leave_kib`` KiB are left."""
    free = shutil.disk_usage(folder).free
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave_kib * 1024))


@pytest.fixture
def previous_potential(cold_run, tmp_path) -> Path:
    """A folder holding a finished fit (its potential set, test set and metrics) and its inputs."""
    for name in POTENTIAL_FILES:
        shutil.copy(cold_run["root"] / name, tmp_path / name)
    shutil.copy(cold_run["dataset"], tmp_path / "train.xyz")
    (tmp_path / "config.yaml").write_text(TINY_CONFIG)
    (tmp_path / "meta.yaml").write_text(META)
    return tmp_path


def warm_start(folder: Path, output_dir: Path = None):
    extra = ["--output-dir", output_dir] if output_dir is not None else []
    return run_cli("train", "--config", folder / "config.yaml", "--meta-config", folder / "meta.yaml",
                   "--dataset", folder / "train.xyz", "--iteration", 2, "--initial-potential",
                   folder / "output_potential.yaml", *extra, timeout=600)


# ----------------------------------------------------------------------------- cannot be replaced
def test_train_finds_an_immutable_previous_potential_before_the_fit(can, previous_potential):
    """The warm start that would replace the potential it started from: the .yace it would publish
    last is immutable. Refused at once, before the fit (no iteration folder), nothing changed."""
    if not can["chattr"]:
        pytest.skip("chattr +i is not allowed on this file system")
    folder = previous_potential
    before = sha_all(folder)
    with immutable(folder / "output_potential.yace"):
        cpu_before = children_cpu_seconds()
        proc = warm_start(folder)
        cpu = children_cpu_seconds() - cpu_before
    one_line(proc, 2, "output_potential.yace", "immutable", "chattr -i")
    assert cpu < 30, f"refused after {cpu:.0f} s of CPU time"
    assert not (folder / "iterations").exists(), "the fit started"
    assert sha_all(folder) == before


def test_sample_finds_an_immutable_previous_selection(can, cold_run, tmp_path):
    if not can["chattr"]:
        pytest.skip("chattr +i is not allowed on this file system")
    import ase.io

    pool = tmp_path / "pool.xyz"

    ase.io.write(str(pool), fcc_cells("Cu", n=8, seed=3, rattle=0.1), format="extxyz")
    args = ["sample", "--candidates", pool, "--potential", cold_run["root"] / "output_potential.yaml",
            "--n_samples", 2, "--output", tmp_path / "out" / "sel.xyz"]
    assert run_cli(*args).returncode == 0
    before = sha_all(tmp_path)
    with immutable(tmp_path / "out" / "sel_report.json"):
        proc = run_cli(*args)
    one_line(proc, 2, "sel_report.json", "immutable")
    assert sha_all(tmp_path) == before


def test_an_output_folder_on_a_read_only_file_system(can, cold_run, tmp_path):
    """validate's earlier outputs on a file system mounted read-only: refused before any work."""
    if not can["mount"]:
        pytest.skip("mounting a tmpfs is not allowed here")
    args = ["validate", "--potential", cold_run["root"] / "output_potential.yace", "--test-set",
            cold_run["root"] / "test_set.xyz", "--no-plots"]
    with tmpfs(tmp_path / "ro", 1024) as mounted:
        assert run_cli(*args, "--output", mounted / "m.json").returncode == 0
        before = sha_all(mounted)
        subprocess.run(["mount", "-o", "remount,ro", str(mounted)], check=True)
        cpu_before = children_cpu_seconds()
        proc = run_cli(*args, "--output", mounted / "m.json")
        one_line(proc, 2, str(mounted), "read-only file system")
        assert children_cpu_seconds() - cpu_before < 30, "validate worked before refusing"
        assert sha_all(mounted) == before


# ----------------------------------------------------------------------------- a full disk
def test_a_disk_that_fills_up_while_sample_writes(can, cold_run, tmp_path):
    """exit 1, one line that says the file system is full and where; the previous selection and
    its report byte-identical, no temporary file left."""
    if not can["mount"]:
        pytest.skip("mounting a tmpfs is not allowed here")
    import ase.io

    pool = tmp_path / "pool.xyz"
    ase.io.write(str(pool), fcc_cells("Cu", n=60, seed=4, rattle=0.1, repeat=(2, 2, 2)), format="extxyz")
    args = ["sample", "--candidates", pool, "--potential", cold_run["root"] / "output_potential.yaml"]
    with tmpfs(tmp_path / "small", 256) as mounted:
        assert run_cli(*args, "--n_samples", 1, "--output", mounted / "sel.xyz").returncode == 0
        fill(mounted, leave_kib=8)
        before = sha_all(mounted)
        proc = run_cli(*args, "--n_samples", 30, "--output", mounted / "sel.xyz")
        one_line(proc, 1, "full", str(mounted))
        assert sha_all(mounted) == before


def test_a_disk_that_fills_up_while_train_writes(can, previous_potential, tmp_path):
    """The output folder (and its iterations/) on a nearly full file system: one line, exit 1,
    the previous potential set byte-identical."""
    if not can["mount"]:
        pytest.skip("mounting a tmpfs is not allowed here")
    folder = previous_potential
    with tmpfs(tmp_path / "full", 512) as mounted:
        for name in POTENTIAL_FILES:
            shutil.copy(folder / name, mounted / name)
        fill(mounted, leave_kib=4)
        before = sha_all(mounted)
        proc = warm_start(folder, output_dir=mounted)
        one_line(proc, 1, "full")
        after = sha_all(mounted)  # beside them: the lock file and the failed attempt's folder, for its logs
        assert {name: after.get(name) for name in before} == before
