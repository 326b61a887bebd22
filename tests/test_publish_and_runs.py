"""All-or-nothing publishing, one train per folder, archives that survive failed reruns, the
pool rule on a big pool, and train metrics that are the published potential's."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from conftest import MAIN, META, TINY_CONFIG, run_cli, write_dataset

from pace_worker.files import atomic_io
from pace_worker.files.atomic_io import OutputGroup, publish
from pace_worker.files.folder_lock import LOCK_NAME, exclusive_folder
from pace_worker.files.iteration_folder import IterationFolder
from pace_worker.fingerprint import structure_fingerprint
from pace_worker.toy_data import emt_dataset, fcc_cells, label_with_emt


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- publish
def test_publish_restores_the_previous_set_when_the_last_rename_fails(tmp_path, monkeypatch):
    names = ("output_potential.asi", "output_potential.yaml", "test_set.xyz", "output_potential.yace")
    for name in names:
        (tmp_path / name).write_text(f"old {name}")
        (tmp_path / f"new_{name}").write_text(f"new {name}")
    before = {name: sha(tmp_path / name) for name in names}
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("output_potential.yace") and ".tmp-" in str(src):
            raise PermissionError(13, "Permission denied (read-only target)")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic_io.os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        publish({tmp_path / name: tmp_path / f"new_{name}" for name in names})
    assert {name: sha(tmp_path / name) for name in names} == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".bak-" in p.name]


def test_publish_removal_is_rolled_back_too(tmp_path, monkeypatch):
    (tmp_path / "a").write_text("old a")
    (tmp_path / "stale.asi").write_text("old active set")
    (tmp_path / "new_a").write_text("new a")

    real_unlink = Path.unlink

    def interrupted_unlink(self, missing_ok=False):
        if self.name == "stale.asi":
            raise KeyboardInterrupt  # SIGTERM/Ctrl-C while the stale file is removed
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(atomic_io.Path, "unlink", interrupted_unlink, raising=True)
    with pytest.raises(KeyboardInterrupt):
        publish({tmp_path / "a": tmp_path / "new_a", tmp_path / "stale.asi": None})
    monkeypatch.undo()
    assert (tmp_path / "a").read_text() == "old a" and (tmp_path / "stale.asi").read_text() == "old active set"


def test_output_group_publishes_nothing_when_interrupted(tmp_path):
    (tmp_path / "m.json").write_text("old json")
    with pytest.raises(KeyboardInterrupt):
        with OutputGroup() as group:
            group.stage(tmp_path / "m_per_structure.csv").write_text("new csv")
            raise KeyboardInterrupt  # e.g. SIGTERM after the CSV, before the JSON
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    assert (tmp_path / "m.json").read_text() == "old json"


# ----------------------------------------------------------------------------- runs
def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("train pid 999999 on elsewhere since 2026-01-01 00:00:00")
    with exclusive_folder(tmp_path):
        assert f"pid {os.getpid()}" in (tmp_path / LOCK_NAME).read_text()
    assert (tmp_path / LOCK_NAME).read_text() == ""


def test_two_trains_in_one_folder(tmp_path):
    write_dataset(tmp_path / "train.xyz", emt_dataset("Cu", n=10, seed=4))
    (tmp_path / "config.yaml").write_text(TINY_CONFIG.replace("fit: {maxiter: 12}", "fit: {maxiter: 5000, max_time: 8}")
                                          + "train: {schedule: off}\n")
    (tmp_path / "meta.yaml").write_text(META)
    args = [sys.executable, str(MAIN), "train", "--config", tmp_path / "config.yaml", "--meta-config",
            tmp_path / "meta.yaml", "--dataset", tmp_path / "train.xyz", "--iteration", 1]
    first = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PACE_WORKER_NO_PROGRESS": "1"})
    lock = tmp_path / LOCK_NAME
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text()) and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert lock.read_text().startswith("train pid"), "the first train never took the lock"
    second = run_cli(*args[2:])
    assert second.returncode == 2, second.stderr
    assert "in use by another train" in second.stderr and f"pid {first.pid}" in second.stderr
    assert len(second.stderr.strip().splitlines()) <= 3
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    assert metrics["fit"]["stopped_by"] == "max_time" and lock.read_text() == ""


def test_a_failed_rerun_keeps_the_archive_of_the_finished_iteration(cold_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(cold_run["root"], root)
    before = {p.relative_to(root): sha(p) for p in root.rglob("*") if p.is_file()}
    (root / "gpu.yaml").write_text("device: gpu\nthreads: 2\n")  # no GPU here: the fit process stops early
    proc = run_cli("train", "--config", root / "config.yaml", "--meta-config", root / "gpu.yaml",
                   "--dataset", root / "train.xyz", "--iteration", 1)
    assert proc.returncode == 2, proc.stderr
    after = {p.relative_to(root): sha(p) for p in root.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if k in before} == before  # archive and outputs untouched
    assert (root / "iterations" / "iter_001" / "output_potential.yaml").is_file()


def test_damaged_state_json_starts_the_iteration_over_without_losing_the_folder(tmp_path):
    folder = tmp_path / "iter_001"
    folder.mkdir()
    (folder / "output_potential.yaml").write_text("the finished potential")
    (folder / "state.json").write_text("")  # killed while writing it
    run = IterationFolder.open(folder, "inputs-x")
    assert run.path != folder and run.final == folder and run.resume_from is None
    assert (folder / "output_potential.yaml").read_text() == "the finished potential"
    (run.path / "output_potential.yaml").write_text("the new potential")
    assert run.commit() == folder
    assert (folder / "output_potential.yaml").read_text() == "the new potential"
    assert json.loads((folder / "state.json").read_text())["status"] == "completed"
    assert not list(tmp_path.glob("iter_001.*"))


def test_an_interrupted_run_of_the_same_inputs_resumes_in_place(tmp_path):
    folder = tmp_path / "iter_002"
    folder.mkdir()
    (folder / "interim_potential_0.yaml").write_text("interim")
    (folder / "state.json").write_text(json.dumps({"status": "running", "inputs": "same", "attempt": 1}))
    run = IterationFolder.open(folder, "same")
    assert run.path == folder and run.resume_from == folder / "resume_from_1.yaml" and run.attempt == 2



def test_an_interrupted_run_whose_interim_potential_is_cut_short_starts_over(tmp_path, caplog):
    """pacemaker rewrites its interim potential in place at every step; a run stopped while it wrote
    it leaves it cut short, and resuming from it failed ("bad conversion"): the run resumes from the
    fit's whole copy, else from pacemaker's file if that is whole, else starts over."""
    import re

    from pace_worker.ace.descriptors import write_unfitted_basis
    from pace_worker.ace.potentials import b_basis_problem
    from pace_worker.config import DescriptorSettings

    whole = tmp_path / "whole.yaml"
    write_unfitted_basis(["Cu"], DescriptorSettings(), whole)
    lines = whole.read_text().splitlines(keepends=True)
    rank1 = [i for i, line in enumerate(lines) if re.search(r"nr: \[\d+\],", line)]
    cut = "".join(lines[:rank1[-1]])
    cases = (("iter_003", whole.read_text(), None, True, []),
             ("iter_004", cut, None, False, ["its interim_potential_0.yaml "]),
             ("iter_005", cut, whole.read_text(), True, []),  # the fit's whole copy
             ("iter_006", whole.read_text(), cut, True,  # a copy damaged later: pacemaker's own file
              ["its interim_potential_0.whole.yaml ", "resuming from interim_potential_0.yaml instead"]),
             ("iter_007", cut, cut, False, ["its interim_potential_0.whole.yaml ", "; interim_potential_0.yaml "]))
    for name, text, whole_copy, resumed, warned in cases:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "interim_potential_0.yaml").write_text(text)
        if whole_copy is not None:
            (folder / "interim_potential_0.whole.yaml").write_text(whole_copy)
        (folder / "state.json").write_text(json.dumps({"status": "running", "inputs": "same", "attempt": 1}))
        caplog.clear()
        run = IterationFolder.open(folder, "same", interim_problem=b_basis_problem)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == (1 if warned else 0) and all(part in warnings[0] for part in warned), warnings
        assert run.path == folder
        if resumed:
            assert run.resume_from == folder / "resume_from_1.yaml" and run.attempt == 2
            assert run.resume_from.read_text() == whole.read_text()
            run.commit()  # the archive keeps pacemaker's files, not the copy kept for resuming
            assert not (folder / "interim_potential_0.whole.yaml").exists()
            assert (folder / "interim_potential_0.yaml").read_text() == text
        else:
            assert run.resume_from is None and run.attempt == 1
            assert "starting this iteration over" in warnings[0]
            assert not (folder / "interim_potential_0.yaml").exists()  # the new run's fit writes its own


def test_the_fit_keeps_a_whole_copy_of_its_interim_potential_after_each_step(tmp_path, monkeypatch):
    """pacemaker's own callback rewrites the interim potential in place; the step callback after it
    copies it under a temporary name and renames it, so the copy is whole whenever a run stops."""
    from pace_worker.ace.pacemaker_child import step_callback

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PACE_WORKER_CHILD", raising=False)
    step_callback(current_fit_iteration=0, current_fit_cycle=0)  # no interim potential yet: nothing to copy
    assert not list(tmp_path.iterdir())
    for step in range(3):
        (tmp_path / "interim_potential_0.yaml").write_text(f"step {step}\n")
        step_callback(current_fit_iteration=step, current_fit_cycle=0)
        assert (tmp_path / "interim_potential_0.whole.yaml").read_text() == f"step {step}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interim_potential_0.whole.yaml", "interim_potential_0.yaml"]


def test_a_whole_interim_copy_that_cannot_be_written_keeps_the_last_one_and_the_fit_goes_on(tmp_path, monkeypatch,
                                                                                            capsys):
    import errno
    import shutil

    from pace_worker.ace.pacemaker_child import step_callback

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PACE_WORKER_CHILD", raising=False)
    (tmp_path / "interim_potential_0.yaml").write_text("step 0\n")
    step_callback(current_fit_iteration=0, current_fit_cycle=0)
    (tmp_path / "interim_potential_0.yaml").write_text("step 1\n")
    real_copy = shutil.copyfile

    def full_disk(src, dst):
        real_copy(src, dst)  # the temporary file is there, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(shutil, "copyfile", full_disk)
    step_callback(current_fit_iteration=1, current_fit_cycle=0)  # does not raise: the fit goes on
    assert (tmp_path / "interim_potential_0.whole.yaml").read_text() == "step 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interim_potential_0.whole.yaml", "interim_potential_0.yaml"]
    assert "could not keep a whole copy of interim_potential_0.yaml" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the pool rule
def broken_frames() -> list:
    """Ten unusable structures of mixed kinds."""
    from ase import Atoms
    base = fcc_cells("Cu", n=10, seed=99, rattle=0.05)
    base[0].positions[0, 0] = np.nan
    base[1].cell[1, 1] = np.inf
    base[2].cell = [[3.6, 0, 0], [3.6, 0, 0], [0, 0, 3.6]]
    base[3].cell = np.zeros((3, 3))
    base[4].positions[1] = base[4].positions[0]
    base[5] = Atoms(cell=[4, 4, 4], pbc=True)
    base[6].set_cell(np.eye(3) * 1e-6, scale_atoms=True)
    base[7].positions[2] = [1e9, 0, 0]
    base[8].positions[3] = base[8].positions[2] + [0.2, 0, 0]
    base[9].positions[1, 2] = -np.inf
    return base


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    root = tmp_path_factory.mktemp("pools")
    rng = np.random.default_rng(3)
    good = fcc_cells("Cu", n=2000, seed=8, strain=0.04, rattle=0.08)
    for atoms in good[::50]:  # some hot ones, so γ varies
        atoms.rattle(0.25, seed=int(rng.integers(1 << 30)))
    bad = broken_frames()
    positions = sorted(rng.choice(len(good), size=len(bad), replace=False))
    mixed = list(good)
    for offset, (where, atoms) in enumerate(zip(positions, bad)):
        mixed.insert(where + offset, atoms)
    ase.io.write(str(root / "clean.xyz"), good, format="extxyz")
    ase.io.write(str(root / "broken.xyz"), mixed, format="extxyz")
    return root


def picked_fingerprints(path: Path) -> list[str]:
    return [structure_fingerprint(a) for a in ase.io.read(str(path), ":")]


@pytest.mark.parametrize("command", ["sample", "direct_sample"])
def test_ten_broken_frames_in_a_2000_pool_change_no_pick(pools, cold_run, command, tmp_path):
    results = {}
    for name in ("clean", "broken"):
        out = tmp_path / f"{name}_picks.xyz"
        if command == "sample":
            proc = run_cli("sample", "--candidates", pools / f"{name}.xyz", "--n_samples", 20, "--output", out,
                           "--potential", cold_run["root"] / "output_potential.yaml")
        else:
            proc = run_cli("direct_sample", "--input", pools / f"{name}.xyz", "--n_clusters", 20, "--output", out,
                           "--no-plots")
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[name] = (picked_fingerprints(out), json.loads((tmp_path / f"{name}_picks_report.json").read_text()),
                         proc.stderr)
    assert results["broken"][0] == results["clean"][0]
    skipped = results["broken"][1]["pool"]["skipped"]
    assert skipped["total"] == 10
    assert skipped["by_reason"] == {"absurd_position": 1, "atoms_too_close": 2, "degenerate_cell": 3,
                                    "no_atoms": 1, "non_finite_cell": 1, "non_finite_position": 2}
    warnings = [line for line in results["broken"][2].splitlines() if "unusable" in line]
    assert len(warnings) == 1 and "skipped 10 unusable" in warnings[0]
    assert results["clean"][1]["pool"]["skipped"]["total"] == 0


# ----------------------------------------------------------------------------- honest numbers
@pytest.fixture(scope="module")
def close_pair_fit(tmp_path_factory):
    """A fit whose test set has a structure with a pair closer than any in the training data."""
    root = tmp_path_factory.mktemp("close")
    write_dataset(root / "train.xyz", emt_dataset("Cu", n=12, seed=2))
    test = fcc_cells("Cu", n=4, seed=12, strain=0.0, rattle=0.005, config_type="test")
    test[2].positions[1] = test[2].positions[0] + (test[2].positions[1] - test[2].positions[0]) * 0.72  # ~1.8 Å
    write_dataset(root / "test.xyz", label_with_emt(test))
    (root / "config.yaml").write_text(TINY_CONFIG.replace("data: {test_size: 0.2}", "data: {test_filename: test.xyz}"))
    (root / "meta.yaml").write_text(META)
    proc = run_cli("train", "--config", root / "config.yaml", "--meta-config", root / "meta.yaml",
                   "--dataset", root / "train.xyz", "--iteration", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_train_metrics_are_those_of_the_published_potential(close_pair_fit, tmp_path):
    root = close_pair_fit
    m = json.loads((root / "train_metrics.json").read_text())
    proc = run_cli("validate", "--potential", root / "output_potential.yace", "--output", tmp_path / "v.json",
                   "--no-plots")
    assert proc.returncode == 0, proc.stderr[-2000:]
    v = json.loads((tmp_path / "v.json").read_text())
    for key in ("energy_rmse_mev_per_atom", "force_rmse_mev_per_A", "force_max_abs_mev_per_A"):
        assert m["test"][key] == pytest.approx(v[key], rel=1e-9, abs=1e-9), key
    assert m["in_fit"]["test"]["n_structures"] == m["test"]["n_structures"] == 4
    # the close pair is inside the core repulsion, and both reports say so
    assert m["core_repulsion"]["test"]["structures_inside_r_in"] == [2]
    assert v["core_repulsion"]["n_structures_inside_r_in"] == 1
    rows = (tmp_path / "v_per_structure.csv").read_text().splitlines()
    header = rows[0].split(",")
    inside = [int(r.split(",")[header.index("pairs_inside_r_in")]) for r in rows[1:]]
    assert inside[2] >= 1 and sum(inside) == inside[2]
    assert m["train"]["gamma_max"] <= 1.01 + 1e-9
