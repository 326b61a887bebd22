"""Throughput of ``validate`` against a naive per-structure ``PyACECalculator`` loop.

    .venv/bin/python bench/validate_speed.py [--potential runs/si-demo/output_potential.yaml]
                                             [--test-set examples/si/data/Si_training.xyz] [--repeat 3]

Both evaluate the same potential on the same structures (energies and forces; the naive loop
is what a pacemaker user writes: ``ase.io.read``, ``atoms.calc = PyACECalculator(...)``,
``get_forces()``). ``validate`` runs with all CPUs as workers, no plots, and no active set
(both sides compute the same things). Prints atoms/s and two ratios (goal ≥ 1.5 on 2 cores):
evaluation only (validate's own ``timing.evaluation_s`` against the loop) and whole jobs
(the validate command against read + loop). The best of ``--repeat`` runs counts.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))


def naive(potential: Path, test_set: Path) -> tuple[float, float]:
    """(whole job seconds, loop seconds)."""
    import ase.io

    from pace_worker.stack import import_pyace

    import_pyace()
    from pyace import PyACECalculator

    start = time.perf_counter()
    structures = ase.io.read(test_set, index=":")
    calc = PyACECalculator(str(potential))
    loop_start = time.perf_counter()
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        atoms.get_forces()
    end = time.perf_counter()
    return end - start, end - loop_start


def ours(potential: Path, test_set: Path, workdir: Path) -> tuple[float, float]:
    """(whole command seconds, evaluation seconds)."""
    from pace_worker.commands.validate import ValidateRequest, validate
    from pace_worker.config import MetaConfig

    start = time.perf_counter()
    result = validate(ValidateRequest(potential=potential, output=workdir / "m.json", test_set=test_set, plots=False,
                                      meta=MetaConfig(), show_progress=False))
    return time.perf_counter() - start, result.metrics["timing"]["evaluation_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--potential", type=Path, default=REPO / "runs/si-demo/output_potential.yace")
    parser.add_argument("--test-set", type=Path, default=REPO / "examples/si/data/Si_training.xyz")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.potential.is_file():
        sys.exit(f"{args.potential} not found: run scripts/si_example.sh first or give --potential")

    import ase.io

    from pace_worker.parallel.executor import default_workers

    structures = ase.io.read(args.test_set, index=":")
    n_atoms = sum(len(a) for a in structures)
    with tempfile.TemporaryDirectory() as tmp:
        # validate reads the .yace; keep the .asi away so that both sides compute the same things
        potential = Path(tmp) / args.potential.name
        potential.write_bytes(args.potential.read_bytes())
        naive_runs = [naive(potential, args.test_set) for _ in range(args.repeat)]
        our_runs = [ours(potential, args.test_set, Path(tmp)) for _ in range(args.repeat)]
    job_naive, loop_naive = min(r[0] for r in naive_runs), min(r[1] for r in naive_runs)
    job_ours, eval_ours = min(r[0] for r in our_runs), min(r[1] for r in our_runs)
    print(f"{len(structures)} structures, {n_atoms} atoms, {default_workers()} CPUs")
    print(f"evaluation: naive loop {n_atoms / loop_naive:8.0f} atoms/s, validate {n_atoms / eval_ours:8.0f} atoms/s, "
          f"ratio {loop_naive / eval_ours:.2f} (goal >= 1.5)")
    print(f"whole job:  read+loop  {job_naive:8.2f} s,       validate {job_ours:8.2f} s,       "
          f"ratio {job_naive / job_ours:.2f}")


if __name__ == "__main__":
    main()
