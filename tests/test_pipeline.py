"""The worker as the pipeline runs it: the pipeline's whole config.yaml (other workers' sections,
``ace_model.initial_potentials``), a fit time budget, the warm-start flow that replaces
``output_potential.*`` under the same names, and no input ever overwritten by an output."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import ase.io
import pytest
from conftest import TINY_CONFIG, assert_one_line_error, pipeline_config, run_cli, write_dataset
from conftest import train_in_data_folder as train

from pace_worker.toy_data import emt_dataset, fcc_cells

BUDGETED_FIT = TINY_CONFIG.replace("fit: {maxiter: 12}", "fit: {maxiter: 5000, max_time: 5}")
OURS = ("sample: {strategy: maxvol}\nvalidate: {group_by: config_type}\ndirect_sample: {k_per_cluster: 1}\n"
        "train: {schedule: off}\n")  # these tests are about pacemaker stopped by the clock

META = "device: cpu\nthreads: 2\nlammps_binary: /usr/bin/lmp\nvasp: {ncore: 4}\n"
FILES = ("output_potential.yaml", "output_potential.yace", "output_potential.asi", "test_set.xyz",
         "train_metrics.json")


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """/data as the orchestrator lays it out, after two budgeted iterations (warm start, same names)."""
    data = tmp_path_factory.mktemp("pipeline") / "data"
    data.mkdir()
    write_dataset(data / "training_set.xyz", emt_dataset("Cu", n=14, seed=1))
    (data / "config.yaml").write_text(pipeline_config(BUDGETED_FIT, OURS))
    (data / "meta_config.yaml").write_text(META)
    dataset_sha = sha(data / "training_set.xyz")

    first = train(data, 1)
    assert first.returncode == 0, first.stderr[-3000:]
    iteration_1 = {name: sha(data / name) for name in FILES}

    # iteration 2 exactly as the orchestrator warm-starts it: the previous potential's names in, same names out
    second = train(data, 2, "--initial-potential", data / "output_potential.yace",
                   "--asi", data / "output_potential.asi")
    assert second.returncode == 0, second.stderr[-3000:]
    assert sha(data / "training_set.xyz") == dataset_sha
    return {"data": data, "first": first, "second": second, "iteration_1": iteration_1,
            "metrics_1": json.loads((data / "iterations" / "iter_001" / "train_metrics.json").read_text()),
            "metrics_2": json.loads((data / "train_metrics.json").read_text())}


def test_other_workers_sections_are_named_once_in_the_log(pipeline):
    lines = [line for line in pipeline["first"].stderr.splitlines() if "ignoring sections of other workers" in line]
    assert len(lines) == 1
    for name in ("experiment", "dft_params", "md_params", "al_params", "ace_model.potential_name"):
        assert name in lines[0]


def test_time_budget_stops_the_fit_and_publishes_a_working_potential(pipeline):
    m = pipeline["metrics_1"]
    fit = m["fit"]
    assert fit["stopped_by"] == "max_time" and fit["max_time_s"] == 5
    assert 1 <= fit["iterations"] < 5000 and fit["budget_stop"]["optimizer_steps"] == fit["iterations"]
    assert fit["final_loss"] < fit["initial_loss"]
    assert m["active_set"]["written"] and m["test"]["n_structures"] >= 1
    # the published potential works: validate evaluates it, with γ from its active set
    data = pipeline["data"]
    iter_1 = data / "iterations" / "iter_001"
    proc = run_cli("validate", "--potential", iter_1 / "output_potential.yace", "--output",
                   data.parent / "budget_validation.json", "--test-set", iter_1 / "test_set.xyz", "--no-plots")
    assert proc.returncode == 0, proc.stderr[-2000:]
    v = json.loads((data.parent / "budget_validation.json").read_text())
    assert v["n_structures"] == m["test"]["n_structures"] and v["gamma"]["max"] > 0
    assert v["force_rmse_mev_per_A"] < 5000


def test_warm_start_replaces_the_potential_and_the_archive_keeps_the_old_one(pipeline):
    data, old, m = pipeline["data"], pipeline["iteration_1"], pipeline["metrics_2"]
    assert m["mode"] == "warm" and m["iteration"] == 2
    assert m["inputs"]["initial_potential"]["sha256"] == old["output_potential.yaml"]
    assert m["inputs"]["asi"]["sha256"] == old["output_potential.asi"]
    assert m["previous_potential_gamma"]["gamma_max"] > 0
    for name in ("output_potential.yaml", "output_potential.yace", "output_potential.asi", "train_metrics.json"):
        assert sha(data / name) != old[name], name                       # replaced ...
        assert sha(data / "iterations" / "iter_001" / name) == old[name], name  # ... and archived as it was
    assert not list(data.glob(".*.tmp-*"))


def test_initial_potentials_of_the_config_is_the_starting_point(pipeline, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(pipeline["data"] / "training_set.xyz", data / "training_set.xyz")
    shutil.copy(pipeline["data"] / "iterations" / "iter_001" / "output_potential.yaml", data / "start.yaml")
    (data / "config.yaml").write_text(pipeline_config(BUDGETED_FIT, OURS, "[start.yaml]"))
    (data / "meta_config.yaml").write_text(META)
    proc = train(data, 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((data / "train_metrics.json").read_text())
    assert m["mode"] == "warm" and m["inputs"]["initial_potential"]["path"] == str((data / "start.yaml").resolve())


def test_sample_direct_sample_validate_with_the_pipeline_config(pipeline):
    data = pipeline["data"]
    pool = fcc_cells("Cu", n=10, seed=5, rattle=0.15)
    ase.io.write(str(data / "pool.xyz"), pool, format="extxyz")
    common = ("--config", data / "config.yaml", "--meta-config", data / "meta_config.yaml")
    proc = run_cli("sample", *common, "--candidates", data / "pool.xyz", "--n_samples", 3, "--output", data / "sel.xyz")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(ase.io.read(str(data / "sel.xyz"), ":")) == 3
    assert json.loads((data / "sel_report.json").read_text())["potential"] == str((data / "output_potential.yaml").resolve())
    proc = run_cli("direct_sample", *common, "--input", data / "pool.xyz", "--output", data / "div.xyz",
                   "--n_clusters", 4, "--no-plots")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(ase.io.read(str(data / "div.xyz"), ":")) == 4
    proc = run_cli("validate", *common, "--potential", data / "output_potential.yace", "--output",
                   data / "metrics.json", "--no-plots")
    assert proc.returncode == 0, proc.stderr[-2000:]
    v = json.loads((data / "metrics.json").read_text())
    assert v["test_set"]["path"] == str((data / "test_set.xyz").resolve()) and v["test_set"]["found_by"] == "train_metrics.json"


# ----------------------------------------------------------------------------- no input is overwritten
def overwrite_cases(data: Path):
    c = ("--config", data / "config.yaml", "--meta-config", data / "meta_config.yaml")
    pool, yace, yaml, asi = (data / "pool.xyz", data / "output_potential.yace", data / "output_potential.yaml",
                             data / "output_potential.asi")
    sample = ("sample", *c, "--candidates", pool, "--n_samples", 2)
    direct = ("direct_sample", *c, "--input", pool, "--n_clusters", 2)
    validate = ("validate", *c, "--potential", yace)
    return {
        "sample onto its pool": ([*sample, "--output", pool], pool),
        "sample onto the potential": ([*sample, "--output", yaml], yaml),
        "sample onto the active set": ([*sample, "--output", asi], asi),
        "sample onto config.yaml": ([*sample, "--output", data / "config.yaml"], data / "config.yaml"),
        "sample report onto meta_config": ([*sample[:3], "--meta-config", data / "sel_report.json", *sample[5:],
                                            "--output", data / "sel.xyz"], data / "sel_report.json"),
        "sample via a symlink to the pool": ([*sample, "--output", data / "link_to_pool.xyz"], pool),
        "direct_sample onto its pool": ([*direct, "--output", pool], pool),
        "direct_sample plot onto its pool": ([*direct[:6], data / "div_pca.png", *direct[7:], "--output",
                                              data / "div.xyz"], data / "div_pca.png"),
        "direct_sample onto config.yaml": ([*direct, "--output", data / "config.yaml"], data / "config.yaml"),
        "validate onto the .yace": ([*validate, "--output", yace], yace),
        "validate onto the B-basis": ([*validate, "--output", yaml], yaml),
        "validate onto the test set": ([*validate, "--output", data / "test_set.xyz"], data / "test_set.xyz"),
        "validate CSV onto the test set": ([*validate, "--test-set", data / "t_per_structure.csv", "--output",
                                            data / "t.json"], data / "t_per_structure.csv"),
        "validate onto the active set": ([*validate, "--output", asi], asi),
    }


@pytest.fixture(scope="module")
def overwrite_data(pipeline, tmp_path_factory):
    data = tmp_path_factory.mktemp("overwrite")
    for name in FILES[:4] + ("config.yaml",):  # no train_metrics.json: it names the original test set
        shutil.copy(pipeline["data"] / name, data / name)
    (data / "meta_config.yaml").write_text(META + "log_level: WARNING\n")  # the error line alone on stderr
    ase.io.write(str(data / "pool.xyz"), fcc_cells("Cu", n=6, seed=7, rattle=0.1), format="extxyz")
    shutil.copy(data / "meta_config.yaml", data / "sel_report.json")           # a YAML under a report's name
    shutil.copy(data / "pool.xyz", data / "div_pca.png")                      # a pool under a plot's name
    shutil.copy(data / "test_set.xyz", data / "t_per_structure.csv")          # a test set under a CSV's name
    (data / "link_to_pool.xyz").symlink_to(data / "pool.xyz")
    return data


@pytest.mark.parametrize("case", list(overwrite_cases(Path("/x"))))
def test_an_output_that_is_an_input_is_refused(overwrite_data, case):
    args, victim = overwrite_cases(overwrite_data)[case]
    before = {p: sha(p) for p in overwrite_data.iterdir() if p.is_file()}
    proc = run_cli(*args)
    line = assert_one_line_error(proc, "would be overwritten")
    assert victim.name in line or "pool.xyz" in line
    after = {p: sha(p) for p in overwrite_data.iterdir() if p.is_file()}
    assert after == before
