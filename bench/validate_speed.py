"""Throughput of ``validate`` against a naive per-structure ``PyACECalculator`` loop.

    .venv/bin/python bench/validate_speed.py [--potential runs/si-demo/output_potential.yaml]
                                             [--test-set examples/si/data/Si_training.xyz] [--repeat 3]

Both evaluate the same potential on the same structures (energies and forces; the naive loop
is what a pacemaker user writes: ``atoms.calc = PyACECalculator(...)``, ``get_forces()``).
``validate`` runs with all CPUs as workers, no plots, and no active set (both sides compute
the same things). Prints atoms/s of each and the ratio (goal ≥ 1.5 on 2 cores); the best of
``--repeat`` runs counts for each.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))


def naive(potential: Path, structures) -> float:
    from pace_worker.stack import import_pyace

    import_pyace()
    from pyace import PyACECalculator

    start = time.perf_counter()
    calc = PyACECalculator(str(potential))
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        atoms.get_forces()
    return time.perf_counter() - start


def ours(potential: Path, test_set: Path, workdir: Path) -> float:
    from pace_worker.config import MetaConfig
    from pace_worker.validate import ValidateRequest, validate

    start = time.perf_counter()
    validate(ValidateRequest(potential=potential, output=workdir / "m.json", test_set=test_set, plots=False,
                             meta=MetaConfig(), show_progress=False))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--potential", type=Path, default=REPO / "runs/si-demo/output_potential.yace")
    parser.add_argument("--test-set", type=Path, default=REPO / "examples/si/data/Si_training.xyz")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.potential.is_file():
        sys.exit(f"{args.potential} not found: run scripts/demo.sh first or give --potential")

    import ase.io

    from pace_worker.executor import default_workers

    structures = ase.io.read(args.test_set, index=":")
    n_atoms = sum(len(a) for a in structures)
    with tempfile.TemporaryDirectory() as tmp:
        # validate reads the .yace; keep the .asi away so that both sides compute the same things
        potential = Path(tmp) / args.potential.name
        potential.write_bytes(args.potential.read_bytes())
        t_naive = min(naive(potential, structures) for _ in range(args.repeat))
        t_ours = min(ours(potential, args.test_set, Path(tmp)) for _ in range(args.repeat))
    print(f"{len(structures)} structures, {n_atoms} atoms, {default_workers()} CPUs")
    print(f"naive PyACECalculator loop   {n_atoms / t_naive:10.0f} atoms/s  ({t_naive:.2f} s)")
    print(f"pace-worker validate         {n_atoms / t_ours:10.0f} atoms/s  ({t_ours:.2f} s, whole command)")
    print(f"ratio validate / naive       {t_naive / t_ours:10.2f}  (goal >= 1.5)")


if __name__ == "__main__":
    main()
