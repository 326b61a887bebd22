"""config.yaml layouts, defaults and errors; meta_config sharing; the basis-size rule."""
from __future__ import annotations

import pytest
from conftest import assert_one_line_error, pipeline_config, run_cli, write_dataset

from pace_worker.ace.default_basis import functions_per_element_for
from pace_worker.ace.pacemaker_input import potential_section
from pace_worker.config import load_meta_config, load_worker_config
from pace_worker.errors import InputError
from pace_worker.toy_data import unlabelled_pool

PACEMAKER = "cutoff: 5.0\nfit: {maxiter: 7}\nbackend: {evaluator: tensorpot, batch_size: 10}\n"


@pytest.mark.parametrize("layout", ["top", "pacemaker", "ace_model"])
def test_three_layouts_give_the_same_settings(tmp_path, layout):
    text = {"top": PACEMAKER,
            "pacemaker": "pacemaker:\n" + "".join("  " + line + "\n" for line in PACEMAKER.splitlines()),
            "ace_model": "ace_model:\n  pacemaker_config:\n" + "".join(
                "    " + line + "\n" for line in PACEMAKER.splitlines())}[layout]
    path = tmp_path / "config.yaml"
    path.write_text(text + "sample: {strategy: random}\n")
    cfg = load_worker_config(path)
    assert cfg.pacemaker.cutoff == 5.0 and cfg.pacemaker.fit.maxiter == 7 and cfg.pacemaker.backend.batch_size == 10
    assert cfg.sample.strategy == "random"


def test_settings_in_two_places_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cutoff: 5\npacemaker: {cutoff: 6}\n")
    with pytest.raises(InputError, match="more than one place"):
        load_worker_config(path)


def test_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pacemaker:\n  fit: {maxiter: many}\n")
    with pytest.raises(InputError, match=r"pacemaker\.fit\.maxiter"):
        load_worker_config(path)


def test_only_tensorpot_evaluator(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("backend: {evaluator: pyace}\n")
    with pytest.raises(InputError, match="backend.evaluator"):
        load_worker_config(path)


def test_meta_config_ignores_other_workers_keys_and_resolves_paths(tmp_path):
    path = tmp_path / "meta.yaml"
    path.write_text("device: GPU\ngpu_index: 1\nthreads: 3\noutput_dir: out\nlammps_binary: /x\nvasp: {ncore: 4}\n")
    meta = load_meta_config(path)
    assert meta.device == "gpu:1" and meta.gpu_index == 1 and meta.threads == 3
    assert meta.output_dir == (tmp_path / "out").resolve()
    path.write_text("device: tpu\n")
    with pytest.raises(InputError, match="device"):
        load_meta_config(path)


def test_basis_rule_scales_with_the_rarest_element():
    assert functions_per_element_for({"Cu": 40}) == 16
    assert functions_per_element_for({"Cu": 10}) == 10          # never more functions than atoms
    assert functions_per_element_for({"Cu": 5000, "Al": 1200}) == 120
    assert functions_per_element_for({"Si": 1_000_000}) == 700


def test_default_potential_is_filled_from_data(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cutoff: 5.5\n")
    cfg = load_worker_config(path)
    pot = potential_section(cfg.pacemaker, ["Cu", "Al"], {"Cu": 800, "Al": 400})
    assert pot["elements"] == ["Al", "Cu"]
    assert pot["bonds"]["ALL"]["rcut"] == 5.5
    assert pot["functions"]["number_of_functions_per_element"] == 40


PIPELINE_CONFIG = pipeline_config("cutoff: 5.0\nfit: {maxiter: 7, max_time: 120}\n",
                                  "sample: {strategy: max_gamma, gamma_lo: 2.0}\nvalidate: {group_by: config_type}\n")


def test_pipeline_config_other_workers_sections_are_ignored_and_logged(tmp_path, caplog):
    path = tmp_path / "config.yaml"
    path.write_text(PIPELINE_CONFIG)
    with caplog.at_level("INFO", logger="pace_worker"):
        cfg = load_worker_config(path)
    assert cfg.pacemaker.cutoff == 5.0 and cfg.pacemaker.fit.maxiter == 7 and cfg.pacemaker.fit.max_time == 120
    assert cfg.sample.strategy == "max_gamma" and cfg.sample.gamma_lo == 2.0
    assert set(cfg.ignored_keys) == {"experiment", "generation", "dft_params", "md_params", "training_params",
                                     "exploration", "al_params", "ace_model.potential_name"}
    ignored_lines = [r.getMessage() for r in caplog.records if "ignoring sections of other workers" in r.getMessage()]
    assert len(ignored_lines) == 1 and "dft_params" in ignored_lines[0] and "ace_model.potential_name" in ignored_lines[0]
    assert cfg.initial_potentials == [] and cfg.initial_potential() is None


def test_pipeline_initial_potentials_one_entry_is_relative_to_the_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("ace_model:\n  initial_potentials: [pots/start.yaml]\n  pacemaker_config: {cutoff: 5}\n")
    cfg = load_worker_config(path)
    assert cfg.initial_potential() == tmp_path / "pots" / "start.yaml"
    path.write_text("ace_model:\n  initial_potentials: [a.yaml, b.yaml]\n  pacemaker_config: {cutoff: 5}\n")
    assert load_worker_config(path).initial_potential() is None
    path.write_text("ace_model:\n  initial_potentials: {a: 1}\n  pacemaker_config: {cutoff: 5}\n")
    with pytest.raises(InputError, match="initial_potentials"):
        load_worker_config(path)


@pytest.mark.parametrize("text, key, suggestion", [
    ("cutof: 5\n", "cutof", "cutoff"),
    ("sampel: {strategy: random}\n", "sampel", "sample"),
    ("validat: {}\n", "validat", "validate"),
    ("direct_sampel: {}\n", "direct_sampel", "direct_sample"),
    ("ace_modle: {pacemaker_config: {}}\n", "ace_modle", "ace_model"),
    ("ace_model: {pacemaker_confg: {cutoff: 5}}\n", "ace_model.pacemaker_confg", "ace_model.pacemaker_config"),
    ("sample: {gama_lo: 2.0}\n", "sample.gama_lo", "gamma_lo"),
    ("sample: {stratgy: random}\n", "sample.stratgy", "strategy"),
    ("validate: {tes_set: t.xyz}\n", "validate.tes_set", "test_set"),
    ("validate: {group_bye: x}\n", "validate.group_bye", "group_by"),
    ("fit: {maxiters: 5}\n", "fit.maxiters", "maxiter"),
    ("ace_model: {pacemaker_config: {fit: {max_iter: 5}}}\n", "ace_model.pacemaker_config.fit.max_iter",
     "fit.maxiter"),
    ("pacemaker: {rcut: 5.0}\n", "pacemaker.rcut", "cutoff"),
    ("pacemaker: {potential: {number_of_functions: 5}}\n", "pacemaker.potential.number_of_functions",
     "potential.functions.number_of_functions_per_element"),
])
def test_near_misses_and_typos_are_errors_with_a_suggestion(tmp_path, text, key, suggestion):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_worker_config(path)
    message = str(err.value)
    assert f"'{key}'" in message and f"'{suggestion}" in message, message


@pytest.mark.parametrize("text, key", [
    ("sample: {strategy: best}\n", "sample.strategy"),
    ("sample: {gamma_lo: abc}\n", "sample.gamma_lo"),
    ("sample: {gamma_lo: 20, gamma_hi: 10}\n", "sample"),
    ("sample: {seed: -3}\n", "sample.seed"),
    ("sample: {buffer_size: 0}\n", "sample.buffer_size"),
    ("validate: {n_worst: -1}\n", "validate.n_worst"),
    ("fit: {optimizer: NotAnOptimizer}\n", "fit.optimizer"),
    ("fit: {max_time: 0}\n", "fit.max_time"),
])
def test_wrong_values_in_our_sections_name_the_key(tmp_path, text, key):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=f"'{key}'"):
        load_worker_config(path)


def test_max_time_is_not_passed_to_pacemaker_but_kept_by_the_step_callback(tmp_path):
    from pace_worker.ace.pacemaker_child import STEP_CALLBACK
    from pace_worker.ace.pacemaker_input import build_input

    path = tmp_path / "config.yaml"
    for text, callbacks in (("fit: {maxiter: 5, max_time: 30}\n", [STEP_CALLBACK]),
                            ("fit: {maxiter: 5}\n", [STEP_CALLBACK]),  # the whole interim copy, always
                            ("fit: {maxiter: 5, callbacks: [my.module.cb]}\n", ["my.module.cb", STEP_CALLBACK])):
        path.write_text(text)
        fit = build_input(load_worker_config(path).pacemaker, potential="p.yaml", train_file="t", test_file=None,
                          seed=1, reference_energy=None)["fit"]
        assert "max_time" not in fit and fit["callbacks"] == callbacks


def test_meta_config_slurm_block_is_read_with_dask_jobqueue_names(tmp_path):
    path = tmp_path / "meta.yaml"
    path.write_text('dask:\n  cluster: slurm\n  jobs: 4\n  cores: 16\n  memory: 64GB\n  walltime: "02:00:00"\n'
                    '  queue: compute\n  account: proj-17\n  job_script_prologue: ["module load python"]\n'
                    '  job_extra_directives: ["--qos=normal"]\n  log_directory: logs\n  connect_timeout_s: 120\n')
    dask = load_meta_config(path).dask
    assert (dask.cluster, dask.jobs, dask.cores, dask.memory, dask.walltime) == ("slurm", 4, 16, "64GB", "02:00:00")
    assert dask.processes is None and dask.queue == "compute" and dask.account == "proj-17"
    assert dask.job_script_prologue == ["module load python"] and dask.job_extra_directives == ["--qos=normal"]
    assert dask.log_directory == (tmp_path / "logs").resolve() and dask.connect_timeout_s == 120


@pytest.mark.parametrize("block, words", [
    ("{cluster: slurm, cores: 2, memory: 1GB, walltme: '1:00'}", ["unknown key 'dask.walltme'", "'walltime'"]),
    ("{cluster: slurm, cores: 2, memory: 1GB, scheduler_options: {hst: x}}",
     ["'dask.scheduler_options.hst'", "'host'"]),
    ("{cores: 2, memory: 1GB}", ["'cores' configures Slurm workers", "cluster: slurm"]),
    ("{cluster: slurm, cores: 2}", ["needs memory"]),
    ("{cluster: slurm, memory: 2GB}", ["needs cores"]),
    ("{cluster: slurm, cores: 2, memory: 1GB, scheduler_address: 'tcp://h:8786'}", ["either scheduler_address"]),
    ("{cluster: pbs, cores: 2, memory: 1GB}", ["'dask.cluster'", "slurm"]),
    ("{cluster: slurm, cores: 2, memory: 1GB, processes: 3}", ["processes (3) cannot exceed cores (2)"]),
    ("{cluster: slurm, cores: 2, memory: lots}", ["'dask.memory'", "64GB"]),
    ("{cluster: slurm, cores: 2, memory: 1GB, walltime: 2:00:00}", ["'dask.walltime'", "quoted string", "7200"]),
    ("{cluster: slurm, cores: 2, memory: 1GB, walltime: 'two hours'}", ["'dask.walltime'", "HH:MM:SS"]),
    ("{cluster: slurm, cores: 2, memory: 1GB, queue: 'a b'}", ["'dask.queue'"]),
    ("{cluster: slurm, cores: 0, memory: 1GB}", ["'dask.cores'"]),
    ("{cluster: slurm, cores: 2, memory: 1GB, job_script_prologue: [\"a\\nb\"]}",
     ["'dask.job_script_prologue'", "one line"]),
])
def test_meta_config_slurm_block_errors_are_one_line_naming_the_key(tmp_path, block, words):
    path = tmp_path / "meta.yaml"
    path.write_text(f"dask: {block}\n")
    with pytest.raises(InputError) as err:
        load_meta_config(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("block, words", [
    ("{cluster: slurm, cores: 2, memory: 1GB, wall_time: '1:00'}", ["unknown key 'dask.wall_time'", "'walltime'"]),
    ("{cluster: slurm, cores: 2, memory: 1GB, walltime: 2:00:00}", ["'dask.walltime'", "quoted string"]),
    ("{cluster: slurm, cores: 2, memory: lots}", ["'dask.memory'", "64GB"]),
])
def test_bad_dask_block_stops_the_command_with_one_line_and_exit_2(tmp_path, block, words):
    """As the user meets it: the command, not the loader — exit 2, one stderr line, no traceback, no output."""
    meta = tmp_path / "meta.yaml"
    meta.write_text(f"dask: {block}\n")
    pool = write_dataset(tmp_path / "pool.xyz", unlabelled_pool(5, seed=1))
    proc = run_cli("direct_sample", "--meta-config", meta, "--input", pool, "--output", tmp_path / "o.xyz",
                   "--n_clusters", 2)
    assert_one_line_error(proc, "meta_config", str(meta), *words)
    assert not (tmp_path / "o.xyz").exists()
