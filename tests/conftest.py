"""Shared fixtures: tiny EMT-labelled datasets and real pacemaker fits run once per session."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest

from pace_worker.toy_data import emt_dataset

REPO = Path(__file__).resolve().parent.parent
MAIN = REPO / "src" / "main.py"

# a tiny basis and few optimizer steps: each fit takes ~30-45 s on 2 cores, mostly TF tracing
TINY_CONFIG = """\
cutoff: 4.5
data: {test_size: 0.2}
potential:
  functions:
    number_of_functions_per_element: 12
    ALL: {nradmax_by_orders: [6, 3, 2], lmax_by_orders: [0, 2, 1]}
fit: {maxiter: 12}
backend: {batch_size: 50, display_step: 5}
"""

META = "device: cpu\nthreads: 2\nlog_level: INFO\nsome_other_worker_setting: {a: 1}\n"

# the other workers' sections of the pipeline's one config.yaml (pace-worker ignores them)
OTHER_WORKERS_SECTIONS = """\
experiment: {name: cu-al, workdir: /data}
generation: {n_structures: 100, supercell: [2, 2, 2]}
dft_params: {code: vasp, encut: 520, kpoints: [4, 4, 4]}
md_params: {temperature: [300, 800], steps: 1000}
training_params: {max_time: 3600}
exploration: {engine: lammps}
al_params: {n_iterations: 10, gamma_threshold: 5}
"""


def pipeline_config(pacemaker: str, ours: str = "", initial_potentials: str = "[]") -> str:
    """The pipeline's config.yaml: other workers' sections, ``ace_model`` (with an orchestrator key
    of its own) holding ``pacemaker`` as ``pacemaker_config``, then our sections ``ours``."""
    nested = "".join(f"    {line}\n" for line in pacemaker.splitlines())
    return (f"{OTHER_WORKERS_SECTIONS}ace_model:\n  initial_potentials: {initial_potentials}\n"
            f"  potential_name: ace\n  pacemaker_config:\n{nested}{ours}")


def run_cli(*args, cwd=None, timeout=600, env=None):
    """``python src/main.py <args>`` exactly as the orchestrator calls it."""
    full_env = {**os.environ, "PACE_WORKER_NO_PROGRESS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(MAIN), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=full_env)


def train_in_data_folder(data: Path, iteration: int, *extra):
    """``train`` as the orchestrator calls it in its /data folder: config.yaml, meta_config.yaml and
    training_set.xyz there, outputs next to them."""
    return run_cli("train", "--config", data / "config.yaml", "--meta-config", data / "meta_config.yaml",
                   "--dataset", data / "training_set.xyz", "--iteration", iteration, *extra)


def assert_one_line_error(proc, *words, code=2) -> str:
    """The command failed with ``code`` and exactly one stderr line, no traceback, naming ``words``."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def write_dataset(path: Path, atoms) -> Path:
    ase.io.write(str(path), atoms, format="extxyz")
    return path


@pytest.fixture(scope="session")
def cu_structures():
    return emt_dataset("Cu", n=14, seed=1)


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's finished (waited-for) children so far: what a
    command cost, which a busy machine does not stretch the way it stretches wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="session")
def cold_run(tmp_path_factory, cu_structures):
    """A cold fit (iteration 1) on 14 Cu cells, one of them energy-only."""
    root = tmp_path_factory.mktemp("cold")
    structures = [a.copy() for a in cu_structures]
    for a, src in zip(structures, cu_structures):
        a.calc = src.calc
    energy_only = structures[3].copy()
    energy_only.info["energy"] = cu_structures[3].get_potential_energy()
    structures[3] = energy_only
    dataset = write_dataset(root / "train.xyz", structures)
    (root / "config.yaml").write_text(TINY_CONFIG)
    (root / "meta.yaml").write_text(META)
    proc = run_cli("train", "--config", root / "config.yaml", "--meta-config", root / "meta.yaml",
                   "--dataset", dataset, "--iteration", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "dataset": dataset, "proc": proc,
            "metrics": json.loads((root / "train_metrics.json").read_text())}
