"""``train`` within a budget (``fit.max_time``, ``train.schedule: auto``): real linear-ACE fits on tiny
EMT data, through the CLI as the orchestrator calls it, and the schedule's choices in-process."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CONFIG, pipeline_config, write_dataset
from conftest import train_in_data_folder as train
from pace_worker.ace.default_basis import default_potential
from pace_worker.algorithms.train_test_split import validation_split
from pace_worker.commands import train_schedule
from pace_worker.commands.train_schedule import (BudgetClock, LinearProblem, RunSettings, linear_stage,
                                                 plan_basis)
from pace_worker.files.structures import LabelledStructures
from pace_worker.toy_data import emt_dataset

SCHEDULED = TINY_CONFIG.replace("fit: {maxiter: 12}", "fit: {maxiter: 5000, max_time: 240}")
META = "device: cpu\nthreads: 2\n"
PUBLISHED = ("output_potential.yaml", "output_potential.yace", "output_potential.asi", "test_set.xyz",
             "train_metrics.json", "train_error_vs_time.png")


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
    """Two budgeted iterations: a cold one, then a warm one on grown data (the orchestrator's next step)."""
    data = tmp_path_factory.mktemp("scheduled") / "data"
    data.mkdir()
    first_data = emt_dataset("Cu", n=30, seed=11, repeat=(2, 1, 1))
    write_dataset(data / "training_set.xyz", first_data)
    (data / "config.yaml").write_text(pipeline_config(SCHEDULED))
    (data / "meta_config.yaml").write_text(META)
    started = time.perf_counter()
    first = train(data, 1)
    first_wall = time.perf_counter() - started
    assert first.returncode == 0, first.stderr[-3000:]
    metrics_1 = json.loads((data / "train_metrics.json").read_text())
    write_dataset(data / "training_set.xyz", first_data + emt_dataset("Cu", n=10, seed=12, repeat=(2, 1, 1)))
    second = train(data, 2, "--initial-potential", data / "output_potential.yace", "--asi",
                   data / "output_potential.asi")
    assert second.returncode == 0, second.stderr[-3000:]
    return {"data": data, "first": first, "first_wall": first_wall, "metrics_1": metrics_1,
            "metrics_2": json.loads((data / "train_metrics.json").read_text())}


def test_a_budgeted_cold_train_publishes_the_linear_fit_chosen_on_the_validation_split(scheduled):
    m = scheduled["metrics_1"]
    assert m["mode"] == "cold (budget schedule)"
    assert m["fit"]["stopped_by"] == "schedule" and m["fit"]["published"] == "linear"
    schedule = m["schedule"]
    assert schedule["published"] == "linear" and schedule["max_time_s"] == 240
    (stage,) = schedule["stages"]
    # the validation split is held out of the fit and is not the test set
    assert m["split"]["n_validation"] == schedule["validation_structures"] >= 1
    assert m["split"]["n_train"] + m["split"]["n_test"] == 30
    # every nested size and ridge was scored on the validation split; the chosen one has the lowest loss
    losses = [c["validation"]["loss"] for c in stage["details"]["candidates"]]
    assert len(losses) == len(stage["details"]["sizes"]) * len(train_schedule.RIDGES)
    assert stage["validation"]["loss"] == pytest.approx(min(losses))
    assert stage["functions_per_element"] in stage["details"]["sizes"]
    # the user's basis is kept: sizes up to the configured number_of_functions_per_element (12), never beyond
    assert max(stage["details"]["sizes"]) == 12 and "configured number_of_functions_per_element 12" in stage["reason"]
    # checkpoints as the structures streamed in, each with validation and (reported only) test errors
    assert len(stage["checkpoints"]) == len(train_schedule.CHECKPOINTS)
    assert stage["checkpoints"][-1]["structures"] == m["split"]["n_train"] - m["split"]["n_validation"]
    assert all(cp["test"]["force_rmse_mev_per_A"] > 0 for cp in stage["checkpoints"])
    assert "lowest validation loss" in stage["reason"] and "force components per function" in stage["reason"]
    # the terminal says what was chosen, in one line
    line = [x for x in scheduled["first"].stdout.splitlines() if x.startswith("budget schedule:")]
    assert len(line) == 1 and f"{stage['functions_per_element']} functions per element" in line[0]


def test_the_published_potential_fits_and_all_files_are_there(scheduled):
    data, m = scheduled["data"], scheduled["metrics_1"]
    for name in PUBLISHED:
        assert (data / "iterations" / "iter_001" / name).is_file(), name
    assert (data / "iterations" / "iter_001" / "train_error_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert m["active_set"]["written"] and m["outputs"]["error_vs_time"].endswith("train_error_vs_time.png")
    # EMT forces of rattled Cu are ~1 eV/Å: the linear fit of 12-24 functions must be far better than zero
    test = m["test"]
    assert test["n_structures"] >= 1
    assert test["force_rmse_mev_per_A"] < 0.5 * force_scale(data / "test_set.xyz")
    assert test["energy_rmse_mev_per_atom"] < 30
    # the budget holds (tiny data: far inside it)
    assert scheduled["first_wall"] < 240 + 120 and m["wall_time_s"] < 240


def force_scale(path: Path) -> float:
    import ase.io

    forces = np.concatenate([a.get_forces() for a in ase.io.read(str(path), ":")])
    return 1e3 * float(np.sqrt(np.mean(forces ** 2)))


def test_a_warm_start_from_a_linear_fit_re_solves_it_on_the_grown_data(scheduled):
    from pyace import BBasisConfiguration

    m1, m2 = scheduled["metrics_1"], scheduled["metrics_2"]
    assert m2["mode"] == "warm (linear re-solve)" and m2["fit"]["published"] == "linear"
    assert m2["split"]["n_train"] > m1["split"]["n_train"]
    # the starting potential's reference energies are kept (energies stay on one scale across iterations)
    ref_1 = m1["schedule"]["stages"][0]["details"]["reference_energy"]
    ref_2 = m2["schedule"]["stages"][0]["details"]["reference_energy"]
    assert ref_2["Cu"] == pytest.approx(ref_1["Cu"], abs=1e-12)
    yaml_2 = BBasisConfiguration(str(scheduled["data"] / "output_potential.yaml"))
    assert dict(yaml_2.metadata)[train_schedule.FIT_KIND_KEY] == "linear"
    assert m2["inputs"]["initial_potential"]["path"].endswith("output_potential.yaml")
    # a basis that changed with the data is said
    size_1 = m1["schedule"]["stages"][0]["functions_per_element"]
    size_2 = m2["schedule"]["stages"][0]["functions_per_element"]
    assert (f"from the starting potential's {size_1} to {size_2}" in m2["schedule"]["reason"]) == (size_1 != size_2)


# ----------------------------------------------------------------------------- the schedule's choices in-process
def labelled(structures) -> LabelledStructures:
    return LabelledStructures(path=Path("mem.xyz"), atoms=list(structures),
                              energies=np.array([a.get_potential_energy() for a in structures]),
                              forces=[a.get_forces() for a in structures])


@pytest.fixture(scope="module")
def cu_problem():
    structures = emt_dataset("Cu", n=24, seed=21, repeat=(2, 1, 1))
    fit_index, val_index = validation_split(structures, 0.2, 1)
    return LinearProblem(section=default_potential(["Cu"], 4.5, 40), fit=labelled([structures[i] for i in fit_index]),
                         validation=labelled([structures[i] for i in val_index]), test=None, reference="auto",
                         row_weight=1000.0)


def test_the_basis_is_sized_by_the_data_and_shrunk_by_a_tight_budget(cu_problem, tmp_path):
    roomy = plan_basis(cu_problem, BudgetClock(time.perf_counter(), 10_000), tmp_path, 1)
    atoms = cu_problem.fit.n_atoms
    assert max(roomy.layout.sizes) == min(train_schedule.template_size(cu_problem.section),
                                          3 * atoms // train_schedule.FORCE_ROWS_PER_FUNCTION)
    assert len(roomy.reasons) == 1
    # a budget already spent down to the publishing reserve: the smallest basis, and the reason says so
    tight = plan_basis(cu_problem, BudgetClock(time.perf_counter(), train_schedule.PUBLISH_RESERVE_S), tmp_path, 1)
    assert max(tight.layout.sizes) == train_schedule.MIN_FUNCTIONS
    assert "more than 50% of the remaining budget" in tight.reasons[-1]


def test_a_pass_cut_short_by_the_clock_still_publishes_what_it_fitted(cu_problem, tmp_path):
    clock = BudgetClock(time.perf_counter(), train_schedule.PUBLISH_RESERVE_S - 1)
    fit = linear_stage(cu_problem, clock, tmp_path, RunSettings(workers=1, show_progress=False))
    details = fit.record.details
    assert 0 < details["structures_fitted"] < len(cu_problem.fit)
    assert "the budget ran out after" in fit.record.reason
    assert fit.potential.is_file() and fit.record.validation.force_rmse_mev_per_A > 0


def test_the_validation_split_keeps_each_structures_role_as_the_data_grow():
    structures = emt_dataset("Cu", n=40, seed=3)
    _, held_small = validation_split(structures[:25], 0.2, 7)
    _, held_large = validation_split(structures, 0.2, 7)
    assert held_small and set(held_small) == {i for i in held_large if i < 25}
    assert validation_split(structures[:5], 0.2, 7) == (list(range(5)), [])  # too few to hold any out


def test_schedule_off_written_as_yaml_means_off(tmp_path):
    from pace_worker.config import load_worker_config

    path = tmp_path / "config.yaml"
    path.write_text(pipeline_config("fit: {max_time: 60}\n", "train: {schedule: off, validation_size: 0.2}\n"))
    config = load_worker_config(path)
    assert config.train.schedule == "off" and config.train.validation_size == 0.2
