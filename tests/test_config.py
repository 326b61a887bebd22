"""config.yaml layouts, defaults and errors; meta_config sharing; the basis-size rule."""
from __future__ import annotations

import pytest

from pace_worker.config import load_meta_config, load_worker_config
from pace_worker.errors import InputError
from pace_worker.pacemaker_input import functions_per_element, potential_section

PACEMAKER = "cutoff: 5.0\nfit: {maxiter: 7}\nbackend: {evaluator: tensorpot, batch_size: 10}\n"


@pytest.mark.parametrize("layout", ["top", "pacemaker", "ace_model"])
def test_three_layouts_give_the_same_settings(tmp_path, layout):
    text = {"top": PACEMAKER,
            "pacemaker": "pacemaker:\n" + "".join("  " + line + "\n" for line in PACEMAKER.splitlines()),
            "ace_model": "ace_model:\n  pacemaker_config:\n" + "".join(
                "    " + line + "\n" for line in PACEMAKER.splitlines())}[layout]
    path = tmp_path / "config.yaml"
    path.write_text(text + "sample: {strategy: maxvol}\n")
    cfg = load_worker_config(path)
    assert cfg.pacemaker.cutoff == 5.0 and cfg.pacemaker.fit.maxiter == 7 and cfg.pacemaker.backend.batch_size == 10
    assert cfg.sample == {"strategy": "maxvol"}


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
    assert functions_per_element({"Cu": 40}) == 16
    assert functions_per_element({"Cu": 10}) == 10          # never more functions than atoms
    assert functions_per_element({"Cu": 5000, "Al": 1200}) == 120
    assert functions_per_element({"Si": 1_000_000}) == 700


def test_default_potential_is_filled_from_data(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cutoff: 5.5\n")
    cfg = load_worker_config(path)
    pot = potential_section(cfg.pacemaker, ["Cu", "Al"], {"Cu": 800, "Al": 400})
    assert pot["elements"] == ["Al", "Cu"]
    assert pot["bonds"]["ALL"]["rcut"] == 5.5
    assert pot["functions"]["number_of_functions_per_element"] == 40
