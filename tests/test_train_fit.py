"""train on real pacemaker: outputs, .yace vs .yaml, active set, errors, warm start, growth, resume."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import ase.io
import numpy as np
import pytest
from conftest import MAIN, TINY_CONFIG, run_cli


def calculator(path):
    from pace_worker.stack import import_pyace

    import_pyace()
    from pyace import PyACECalculator

    return PyACECalculator(str(path))


def test_cold_fit_writes_all_outputs_in_the_dataset_folder(cold_run):
    root, m = cold_run["root"], cold_run["metrics"]
    for name in ("output_potential.yaml", "output_potential.yace", "output_potential.asi", "test_set.xyz",
                 "train_metrics.json"):
        assert (root / name).stat().st_size > 0, name
    archive = root / "iterations" / "iter_001"
    for name in ("input.yaml", "log.txt", "pacemaker.out", "interim_potential_0.yaml", "metrics.txt"):
        assert (archive / name).is_file(), name
    assert not list(archive.glob("*.whole.yaml")), "the copy kept for resuming stayed in the archive"
    assert not list(root.glob(".*.tmp-*")), "temporary files left behind"
    assert m["schema"] == "pace-worker/train_metrics/2"
    assert m["iteration"] == 1 and m["fit_seed"] == m["seed"] + 1 and m["mode"] == "cold"
    assert m["device"]["used"] == "cpu" and m["device"]["requested"] == "cpu"
    assert m["versions"]["python-ace"] == "0.4.0rc1" and m["versions"]["tensorpotential"] == "0.6.2.1"
    assert len(m["inputs"]["dataset"]["sha256"]) == 64
    assert m["split"]["n_train"] + m["split"]["n_test"] == 14
    assert m["train"]["n_structures"] == m["split"]["n_train"]
    assert m["fit"]["final_loss"] < m["fit"]["initial_loss"] / 10


def test_energy_only_structure_is_kept_with_zero_force_weight(cold_run):
    m = cold_run["metrics"]
    # structure 3 has no forces; it is in the training set unless the split sent it to test
    train_names = cold_run["root"] / "iterations" / "iter_001" / "train.pckl.gzip"
    import pandas as pd

    df = pd.read_pickle(train_names, compression="gzip")
    row = df[df["name"] == "train.xyz#3"]
    if len(row):
        assert m["train"]["n_energy_only"] == 1
        assert np.all(row.iloc[0]["w_forces"] == 0) and row.iloc[0]["w_energy"] > 0
    else:
        assert m["train"]["n_energy_only"] == 0


def test_yace_reproduces_yaml_energies_and_forces(cold_run):
    root = cold_run["root"]
    yaml_calc, yace_calc = calculator(root / "output_potential.yaml"), calculator(root / "output_potential.yace")
    for atoms in ase.io.read(root / "train.xyz", index=":"):
        a1, a2 = atoms.copy(), atoms.copy()
        a1.calc, a2.calc = yaml_calc, yace_calc
        assert a1.get_potential_energy() == pytest.approx(a2.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(a1.get_forces(), a2.get_forces(), atol=1e-6)


def test_written_active_set_bounds_gamma_of_the_training_set(cold_run):
    from pace_worker.ace import activeset

    root, m = cold_run["root"], cold_run["metrics"]
    test_idx = {a.info["dataset_index"] for a in ase.io.read(root / "test_set.xyz", index=":")}
    train = [a for i, a in enumerate(ase.io.read(root / "train.xyz", index=":")) if i not in test_idx]
    gammas = activeset.optional_gammas(root / "output_potential.yaml", root / "output_potential.asi", train)
    assert len(gammas) == m["split"]["n_train"]
    assert gammas.max() <= 1.05
    assert m["active_set"]["train_gamma_max"] == pytest.approx(gammas.max(), rel=1e-9)
    # a strongly compressed cell lies far outside the data: γ must say so
    squeezed = train[0].copy()
    squeezed.set_cell(squeezed.cell * 0.85, scale_atoms=True)
    far = activeset.optional_gammas(root / "output_potential.yaml", root / "output_potential.asi", [squeezed])
    assert far[0] > 2


def test_test_errors_are_small_and_match_the_held_out_structures(cold_run):
    root, m = cold_run["root"], cold_run["metrics"]
    assert m["test"]["energy_rmse_mev_per_atom"] < 20
    assert m["test"]["force_rmse_mev_per_A"] < 120
    # recompute the test force RMSE from the written test set with the written potential
    calc = calculator(root / "output_potential.yaml")
    errors = []
    for atoms in ase.io.read(root / "test_set.xyz", index=":"):
        ref = atoms.get_forces()
        atoms.calc = calc
        errors.append((atoms.get_forces() - ref).ravel())
    rmse = 1e3 * np.sqrt(np.mean(np.concatenate(errors) ** 2))
    assert rmse == pytest.approx(m["test"]["force_rmse_mev_per_A"], rel=1e-4)


def test_warm_start_begins_at_the_previous_loss_and_reports_previous_gamma(cold_run, tmp_path):
    root = cold_run["root"]
    prev_yaml, prev_asi = tmp_path / "prev.yaml", tmp_path / "prev.asi"
    shutil.copy(root / "output_potential.yaml", prev_yaml)
    shutil.copy(root / "output_potential.asi", prev_asi)
    out = tmp_path / "out"
    (tmp_path / "meta.yaml").write_text(f"device: cpu\nthreads: 2\noutput_dir: {out}\n")
    proc = run_cli("train", "--config", root / "config.yaml", "--meta-config", tmp_path / "meta.yaml",
                   "--dataset", cold_run["dataset"], "--iteration", 2, "--initial-potential", prev_yaml,
                   "--asi", prev_asi)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "train_metrics.json").read_text())
    assert m["mode"] == "warm"
    assert m["fit"]["initial_loss"] == pytest.approx(cold_run["metrics"]["fit"]["final_loss"], rel=1e-6)
    assert m["fit"]["final_loss"] <= m["fit"]["initial_loss"]
    assert (out / "iterations" / "iter_002").is_dir()
    prev = m["previous_potential_gamma"]
    assert prev["n_structures"] == m["split"]["n_train"] and prev["gamma_max"] <= 1.05
    # the new potential's active set is new, not a copy of the old one
    assert (out / "output_potential.asi").read_bytes() != prev_asi.read_bytes()


def test_bigger_config_basis_grows_the_initial_potential(cold_run, tmp_path):
    root = cold_run["root"]
    (tmp_path / "config.yaml").write_text(TINY_CONFIG.replace("number_of_functions_per_element: 12",
                                                              "number_of_functions_per_element: 20"))
    (tmp_path / "meta.yaml").write_text("device: cpu\n")
    shutil.copy(root / "output_potential.yaml", tmp_path / "prev.yaml")
    shutil.copy(root / "output_potential.yace", tmp_path / "prev.yace")
    # a .yace given as initial potential is replaced by the .yaml next to it
    proc = run_cli("train", "--config", tmp_path / "config.yaml", "--meta-config", tmp_path / "meta.yaml",
                   "--dataset", cold_run["dataset"], "--iteration", 2, "--initial-potential", tmp_path / "prev.yace",
                   "--output-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "out" / "train_metrics.json").read_text())
    assert m["mode"] == "grow"
    assert m["fit"]["n_functions"] == 20
    assert "growing the basis" in proc.stderr
    # growth keeps the old coefficients: it starts far below a cold start's loss
    assert m["fit"]["initial_loss"] < cold_run["metrics"]["fit"]["initial_loss"] / 10


def fit_processes_in(folder):
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "pace_worker.ace.pacemaker_child" in " ".join(p.info["cmdline"] or []) and p.cwd() == str(folder):
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_interrupted_iteration_leaves_outputs_untouched_and_resumes(cold_run, tmp_path):
    root = cold_run["root"]
    out = tmp_path
    for name in ("output_potential.yaml", "output_potential.yace", "output_potential.asi"):
        shutil.copy(root / name, out / name)
    before = {p.name: p.read_bytes() for p in out.glob("output_potential.*")}
    config = tmp_path / "config.yaml"
    config.write_text(TINY_CONFIG.replace("maxiter: 12", "maxiter: 200"))
    args = [sys.executable, str(MAIN), "train", "--config", str(config), "--dataset", str(cold_run["dataset"]),
            "--iteration", "3", "--output-dir", str(out), "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    interim = out / "iterations" / "iter_003" / "interim_potential_0.yaml"
    deadline = time.time() + 300
    while not interim.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert interim.exists(), "the fit never saved an interim potential"
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)  # how an orchestrator stops a job
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr and "terminated" in stderr
    assert not fit_processes_in(out / "iterations" / "iter_003"), "the pacemaker process outlived the worker"
    assert {p.name: p.read_bytes() for p in out.glob("output_potential.*")} == before
    state = json.loads((out / "iterations" / "iter_003" / "state.json").read_text())
    assert state["status"] == "running"
    assert (out / "iterations" / "iter_003" / "interim_potential_0.whole.yaml").is_file()  # the step callback's

    config.write_text(TINY_CONFIG.replace("maxiter: 12", "maxiter: 200"))  # same inputs
    proc = run_cli("train", "--config", config, "--dataset", cold_run["dataset"], "--iteration", 3,
                   "--output-dir", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "train_metrics.json").read_text())
    assert m["mode"].startswith("resume")
    assert m["fit"]["initial_loss"] < cold_run["metrics"]["fit"]["initial_loss"] / 10
    assert (out / "iterations" / "iter_003" / "resume_from_1.yaml").is_file()
