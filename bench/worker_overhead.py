"""What a command's worker adds per structure to pyace's own work, on one core, free of the VM's drift.

    .venv/bin/python bench/worker_overhead.py --potential P.yaml --pool pool.xyz --test-set test.xyz [--probe 1280]

For each command, the function its workers run on a chunk of the file (``sample``:
:func:`pace_worker.ace.gamma.score_chunk`; ``direct_sample``: :func:`pace_worker.ace.descriptors.features_chunk`
on the potential's basis; ``validate``: :func:`pace_worker.ace.labelled_evaluation.evaluate_chunk` of the
``.yace``), given the chunk as the command gives it (a byte range of the file: reading, parsing, checks,
what is sent back), against the limit's loop (``bench/limit.py``: pyace's environment and ``compute`` on
the same chunk's structures already in memory). Both run in this process, chunk after chunk in turn, each
chunk timed ``--repeats`` times and its best kept: the pace the VM drifts by over minutes (up to ~40 %
here) meets both alike, so their ratio is steady to about ±5 % (six runs here) where single command runs move
by ±15 %.

The ratio is the part of a command's ``wall / limit`` that its workers cause per structure; the rest is the
main process (start-up, the scan, selection, clustering, writing), the last chunks' imbalance and how much
slower pyace runs when every core is busy (``bench/limit.py`` prints that as its busy factor). The
commands' defaults: min_distance 0.5 Å, chunks of 64, ``sample`` sending every structure back (its first
chunks; later ones send back fewer), ``validate`` without plots (no force sample) and without an active set.

Beside it, timed in the same turns, the least worker (:func:`least_loop`): the chunk's text read and parsed by
libAtoms' C parser, pyace's environment and ``compute``, and nothing else (no ASE structure, no check, no
result). Its ratio to pyace's loop is what a worker that reads the text with Python and calls pyace pays at
the least; the commands' ratio above it is what their ASE structures, checks and results cost. (The bench's
pools are periodic cells: the least loop takes every frame as one.)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

CHUNK = 64  # meta_config's default chunk_size


def pyace_loop(potential: Path, projections: bool, default_evaluator: bool = False):
    """The limit's work (``bench/limit.py``) as a function of a list of structures: per structure,
    pyace's neighbour environment (``PyACECalculator.get_atomic_env``) and ``ACECalculator.compute``
    with the B-projections read out (``projections``) or energy and forces, by the evaluator the
    commands use (``predictions.CALCULATOR_OPTIONS``: the recursive one for a .yace) or, with
    ``default_evaluator``, by ``PyACECalculator``'s default (the product evaluator for a .yace)."""
    from pace_worker.ace.predictions import CALCULATOR_OPTIONS
    from pace_worker.stack import import_pyace

    import_pyace()
    from pyace import PyACECalculator

    calc = PyACECalculator(str(potential), **({} if default_evaluator else CALCULATOR_OPTIONS))

    def run(structures: list) -> None:
        for atoms in structures:
            calc.get_atomic_env(atoms)
            calc.ace.compute(calc.ae, compute_projections=projections)
            if projections:
                np.asarray(calc.ace.projections)
            else:
                np.array(calc.ace.energy), np.array(calc.ace.forces)
    return run


def least_loop(potential: Path, projections: bool):
    """The least any worker on this stack does per chunk, as a function of a
    :class:`~pace_worker.files.frames.PoolChunk`: the chunk's frames read from the file, parsed by
    libAtoms' C parser into its dictionaries (:func:`pace_worker.files.c_extxyz.frame_dicts`, as the
    commands parse them), each frame's pyace environment built from its positions, cell and species
    indices (the builder the commands use) and ``ACECalculator.compute`` with the B-projections or
    energy and forces read out (:func:`pyace_loop`'s). No ASE structure, no check of anything,
    nothing sent back: a worker that reads the text with Python and calls pyace cannot cost less;
    what the commands' workers cost beyond it is theirs (building ASE ``Atoms``, the checks, the
    results)."""
    from extxyz.core import extract_lattice

    from pace_worker.ace.predictions import LoadedPotential
    from pace_worker.ace.projections import species_indices
    from pace_worker.files.c_extxyz import _atomic_numbers, frame_dicts
    from pace_worker.files.structures import _build_atomic_env

    loaded = LoadedPotential.load(str(potential))
    species_of_number = species_indices({el: i for i, el in enumerate(loaded.basis.elements_name)})
    build, cutoff = _build_atomic_env(), loaded.cutoff

    def run(chunk) -> None:
        texts = chunk.texts()
        for _, info, arrays in frame_dicts(b"".join(texts), len(texts)):
            lattice = extract_lattice(dict(info))
            species = species_of_number[_atomic_numbers(arrays["species"])]
            env = build(arrays["pos"], lattice.T, species, True, cutoff)
            loaded.ace.compute(env, compute_projections=projections)
            if projections:
                np.asarray(loaded.ace.projections)
            else:
                np.array(loaded.ace.energy), np.array(loaded.ace.forces)
    return run


def command_worker(command: str, potential: Path, path: Path):
    """``(worker, chunk options)``: the worker function of ``command`` loaded as its workers load it."""
    from pace_worker.config import WorkerConfig

    data = WorkerConfig().pacemaker.data  # the config's defaults
    min_distance = data.min_distance
    if command == "sample":
        from pace_worker.ace.gamma import load_scorer, score_chunk

        load_scorer(str(potential), str(potential.with_suffix(".asi")))
        return score_chunk, {"send_back_from": None, "with_projections": True, "min_distance": min_distance}
    if command == "direct_sample":
        from pace_worker.ace.descriptors import features_chunk, load_basis

        load_basis(str(potential))
        return features_chunk, {"min_distance": min_distance, "color_by": None}
    from pace_worker.ace.labelled_evaluation import EvaluationSettings, LabelKeys, TestSetFile, evaluate_chunk
    from pace_worker.ace.predictions import load_potential
    from pace_worker.commands.validate import SAME_POSITION_A

    elements = tuple(load_potential(str(potential)).basis.elements_name)
    test_set = TestSetFile(path, LabelKeys(data.energy_key, data.forces_key, data.stress_key),
                           min_distance=SAME_POSITION_A, elements=elements)
    return evaluate_chunk, {"settings": EvaluationSettings(), "test_set": test_set}


def worker_pyace_least_seconds(command: str, potential: Path, path: Path, probe: int, repeats: int = 5) \
        -> tuple[float, float, float]:
    """``(worker, pyace, least)`` seconds per structure on the first ``probe`` frames of ``path`` (whole
    chunks), chunk after chunk in turn, best of ``repeats`` per chunk; ``least``: :func:`least_loop`'s.
    ``potential``: the B-basis ``.yaml`` for ``sample`` (its ``.asi`` beside it) and ``direct_sample``,
    the ``.yace`` for ``validate``."""
    from pace_worker.files.frames import PoolChunk, frame_offsets

    worker, options = command_worker(command, potential, path)
    pyace = pyace_loop(potential, projections=command != "validate")
    least = least_loop(potential, projections=command != "validate")
    offsets = frame_offsets(path)
    starts = range(0, min(probe, len(offsets)) - CHUNK + 1, CHUNK)

    def chunk(i: int) -> PoolChunk:
        return PoolChunk(i, CHUNK, path=str(path), offset=int(offsets[i]), what="bench", options=options)

    in_memory = {i: chunk(i).read() for i in starts}
    best = {name: dict.fromkeys(starts, float("inf")) for name in ("worker", "pyace", "least")}
    for _ in range(repeats):
        for i in starts:
            for name, work in (("worker", lambda: worker(chunk(i))), ("pyace", lambda: pyace(in_memory[i])),
                               ("least", lambda: least(chunk(i)))):
                start = time.perf_counter()
                work()
                best[name][i] = min(best[name][i], time.perf_counter() - start)
    structures = CHUNK * len(starts)
    worker_s, pyace_s, least_s = (sum(best[name].values()) / structures for name in ("worker", "pyace", "least"))
    return worker_s, pyace_s, least_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--potential", type=Path, required=True, help="B-basis .yaml with its .asi and .yace beside it")
    parser.add_argument("--pool", type=Path, required=True, help="an unlabelled extxyz pool (sample, direct_sample)")
    parser.add_argument("--test-set", type=Path, required=True, help="a labelled extxyz test set (validate)")
    parser.add_argument("--probe", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for command, path in (("sample", args.pool), ("direct_sample", args.pool), ("validate", args.test_set)):
        potential = args.potential.with_suffix(".yace") if command == "validate" else args.potential
        ours, pyace, least = worker_pyace_least_seconds(command, potential, path, args.probe, args.repeats)
        print(f"{command:14s} worker {ours * 1e6:6.0f} us/structure, pyace {pyace * 1e6:6.0f}, "
              f"ratio {ours / pyace:.3f}; the least worker {least * 1e6:6.0f}, ratio {least / pyace:.3f}", flush=True)


if __name__ == "__main__":
    main()
