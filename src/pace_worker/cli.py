"""The command line: ``pace-worker <command>``, ``python -m pace_worker``, ``python src/main.py``.

Each command is one entry of :data:`COMMANDS`: a function that adds its flags to a parser and
a function that runs it from the parsed flags and returns an exit status. Commands map to
pure core functions (``pace_worker.commands.train.train`` …); this layer only parses, prints, and turns
errors into exit statuses:

* 0 — success;
* 1 — the work itself failed (e.g. pacemaker crashed); outputs untouched;
* 2 — bad input (one line on stderr naming the file / structure / key and what to do);
* 130 — interrupted (Ctrl-C, SIGINT), 143 — terminated (SIGTERM), worker processes included
  (:mod:`pace_worker.interrupts`); a rerun of train resumes the fit.

Imports: each ``run_*`` function imports its command (and ``config``) when it runs, the one place
in the package where pace-worker's own modules are imported inside functions: ``--help`` and a
mistyped flag answer without loading the config models and the commands (0.35 s of the 1.4 s
start-up measured here). Elsewhere only pyace, TensorFlow/tensorpotential, pandas, matplotlib,
rich, Dask, scikit-learn, SciPy and ASE's ``io`` and neighbour list are imported inside functions:
each costs tenths of a second to seconds or changes global state (pyace reconfigures the root
logger, tensorpotential TensorFlow's globals), and a command that does not need them does not pay.
``sample``, ``validate`` and ``direct_sample`` given a potential start their workers after
importing only pyace's compiled modules (:func:`pace_worker.stack.import_pyace_core`) and import
what their last step needs while the workers run (:class:`pace_worker.stack.BackgroundImports`).

Spellings: a command may have aliases (``direct_sample`` / ``direct-sample``) and flags may
have both ``_`` and ``-`` forms (``--n_samples`` / ``--n-samples``); see :func:`add_flag`.
"""
from __future__ import annotations

import argparse
import atexit
import gc
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from pace_worker import __version__, interrupts
from pace_worker.algorithms.cluster_picks import SELECTIONS
from pace_worker.algorithms.sample_strategies import STRATEGIES
from pace_worker.errors import DiskFull, FitError, InputError
from pace_worker.files.atomic_io import DISK_FULL
from pace_worker.interrupts import Terminated

log = logging.getLogger("pace_worker")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    aliases: tuple[str, ...] = ()


class OneLineParser(argparse.ArgumentParser):
    """Flag errors are one line that points to ``--help`` (no usage dump), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add ``--a_b`` together with its ``--a-b`` twin (or the other way round)."""
    spellings = [f"--{name}"]
    twin = name.replace("_", "-") if "_" in name else name.replace("-", "_")
    if twin != name:
        spellings.append(f"--{twin}")
    kwargs.setdefault("dest", name.replace("-", "_"))
    parser.add_argument(*spellings, **kwargs)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "config", type=Path, help="config.yaml (science: pacemaker and command settings)")
    add_flag(parser, "meta-config", type=Path, help="meta_config.yaml (environment: device, threads, folders)")
    parser.add_argument("--no-progress", action="store_true", help="never show progress bars")


def add_scheduler_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                        help="run the chunks on this Dask scheduler's workers (default: meta_config "
                             "dask.scheduler_address, else local worker processes)")


def load_configs(args: argparse.Namespace):
    """config.yaml and meta_config.yaml of a command; sets the log level from meta_config."""
    from pace_worker.config import load_meta_config, load_worker_config

    check_scheduler_flag(args)
    meta = load_meta_config(args.meta_config)
    if getattr(args, "scheduler", None):
        if meta.dask.cluster:
            log.info("--scheduler %s given: dask.cluster: %s of meta_config is not started", args.scheduler,
                     meta.dask.cluster)
        meta.dask.scheduler_address = args.scheduler
        meta.dask.cluster = None
    configure_logging(meta.log_level)  # before config.yaml, whose loading logs what it ignores
    config = load_worker_config(args.config)
    return config, meta


def check_scheduler_flag(args: argparse.Namespace) -> None:
    from pace_worker.config import check_scheduler_address

    if getattr(args, "scheduler", None):
        try:
            check_scheduler_address(args.scheduler)
        except ValueError as exc:
            raise InputError(f"--scheduler: {exc}")


def _fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser)
    add_flag(parser, "output-dir", type=Path, default=None,
             help="output folder (default: meta_config output_dir, else the dataset's folder)")
    add_flag(parser, "dataset", type=Path, required=True, help="labelled structures: extxyz (.xyz[.gz]) or .pckl.gzip")
    add_flag(parser, "iteration", type=int, required=True, help="active-learning iteration (archive folder and seed)")
    add_flag(parser, "initial-potential", type=Path, default=None,
             help="continue from this potential (.yaml; a .yace needs its .yaml next to it)")
    add_flag(parser, "potential-yaml", type=Path, default=None, help="B-basis YAML that replaces the potential section")
    add_flag(parser, "asi", type=Path, default=None,
             help="active set of the previous potential: reports how new the data were for it")


def run_train(args: argparse.Namespace) -> int:
    from pace_worker.commands.train import TrainRequest, train

    config, meta = load_configs(args)
    result = train(TrainRequest(dataset=args.dataset, iteration=args.iteration, config=config, meta=meta,
                                initial_potential=args.initial_potential, potential_yaml=args.potential_yaml,
                                asi=args.asi, output_dir=args.output_dir,
                                show_progress=False if args.no_progress else None))
    print_train_summary(result)
    return 0


def print_train_summary(result) -> None:
    fmt = _fmt
    steps = "" if result.schedule else f"{result.optimizer_steps} optimizer steps, "
    print(f"iteration {result.iteration} ({result.mode}): {result.n_functions} functions, "
          f"{steps}{result.wall_time_s:.1f} s, device {result.device}")
    if result.schedule:
        print(result.schedule)
    if result.max_time_s is not None:
        print(f"the time budget (fit.max_time {result.max_time_s:g} s) ended the fit; the potential reached "
              "by then is published")
    print("errors of the published potential (as validate computes them):")
    print(f"{'set':6s} {'structures':>10s} {'E RMSE meV/at':>14s} {'E MAE':>8s} {'F RMSE meV/A':>13s} {'F MAE':>8s}")
    for name, s in result.errors.items():
        if s:
            print(f"{name:6s} {s.n_structures:>10d} {fmt(s.energy_rmse_mev_per_atom):>14s} "
                  f"{fmt(s.energy_mae_mev_per_atom):>8s} {fmt(s.force_rmse_mev_per_A):>13s} "
                  f"{fmt(s.force_mae_mev_per_A):>8s}")
    if result.active_set_gamma_max is not None:
        print(f"active set: max γ over the training set {result.active_set_gamma_max:.3f}")
    else:
        print(f"active set: not written ({result.active_set_missing})")
    for key, path in result.files.items():
        if path:
            print(f"  {key:9s} {path}")


# ----------------------------------------------------------------------------- validate
def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser)
    add_scheduler_flag(parser)
    add_flag(parser, "potential", type=Path, required=True, help="potential to test (.yace or B-basis .yaml)")
    add_flag(parser, "output", type=Path, required=True,
             help="metrics JSON; the CSV and PNGs are written next to it")
    add_flag(parser, "test-set", type=Path, default=None,
             help="test structures (default: config validate.test_set, else the test set train wrote)")
    add_flag(parser, "asi", type=Path, default=None, help="active set for γ (default: the .asi next to the potential)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def run_validate(args: argparse.Namespace) -> int:
    from pace_worker.commands.validate import ValidateRequest, validate
    from pace_worker.parallel.slurm_cluster import workers_for

    config, meta = load_configs(args)
    with workers_for(meta):
        result = validate(ValidateRequest(potential=args.potential, output=args.output, test_set=args.test_set,
                                          asi=args.asi, config=config, meta=meta, plots=not args.no_plots,
                                          show_progress=False if args.no_progress else None))
    print(f"{result.n_structures} structures / {result.n_atoms} atoms from {result.test_set} "
          f"({result.test_set_found_by}); {_fmt(result.atoms_per_s, 0)} atoms/s")
    print(f"{'group':16s} {'structures':>10s} {'E RMSE meV/at':>14s} {'F RMSE meV/A':>13s}")
    for name, row in result.rows:
        print(f"{name:16s} {row.n_structures:>10d} {_fmt(row.energy_rmse_mev_per_atom):>14s} "
              f"{_fmt(row.force_rmse_mev_per_A):>13s}")
    if result.n_inside_r_in:
        print(f"{result.n_inside_r_in} structure(s) have a pair closer than the potential's core-repulsion "
              f"radius r_in (first: {result.structures_inside_r_in[:5]}); their errors are those of its ZBL core")
    if result.gamma:
        g = result.gamma
        print(f"γ: max {g.max:.2f}, {100 * g.fraction_above_1:.0f}% of structures above 1, Spearman ρ(γ, "
              f"force error) {_fmt(g.spearman_gamma_vs_force_rmse)}")
    for key, path in result.files.items():
        print(f"  {key:20s} {path.resolve()}")
    return 0


# ----------------------------------------------------------------------------- sample
def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser)
    add_scheduler_flag(parser)
    add_flag(parser, "candidates", type=Path, required=True, help="pool of candidate structures (extxyz)")
    add_flag(parser, "n_samples", type=int, required=True, help="number of structures to pick")
    add_flag(parser, "output", type=Path, required=True, help="extxyz of the picks; the JSON report goes next to it")
    add_flag(parser, "potential", type=Path, default=None,
             help="B-basis .yaml (default: config sample.potential, else output_potential.yaml in the output folder)")
    add_flag(parser, "asi", type=Path, default=None, help="active set (default: the .asi next to the potential)")
    add_flag(parser, "strategy", choices=tuple(STRATEGIES), default=None, help="selection strategy (default: maxvol)")
    add_flag(parser, "seed", type=non_negative_int, default=None,
             help="seed of the random strategy (default: config or 42)")


def run_sample(args: argparse.Namespace) -> int:
    from pace_worker.commands.sample import SampleRequest, sample
    from pace_worker.parallel.slurm_cluster import workers_for

    config, meta = load_configs(args)
    with workers_for(meta):
        result = sample(SampleRequest(candidates=args.candidates, n_samples=args.n_samples, output=args.output,
                                      potential=args.potential, asi=args.asi, strategy=args.strategy, seed=args.seed,
                                      config=config, meta=meta, show_progress=False if args.no_progress else None))
    counts = result.counts
    if result.nothing_to_learn:
        print(f"nothing left to learn from this pool: none of its structures has γ > {result.gamma_min:g} "
              f"({counts.not_extrapolative} within the potential's domain); wrote no structures")
    print(f"{result.strategy}: picked {len(result.picks)} of {counts.usable} eligible structures "
          f"({counts.read} read, {counts.duplicates} duplicates, {counts.unknown_elements} with unknown elements) "
          f"in {result.wall_time_s:.1f} s")
    gamma = result.pool_gamma
    print(f"pool γ: median {gamma.percentiles['50']:.2f}, max {gamma.percentiles['100']:.2f}, "
          f"{gamma.count_above['1']} structures above 1")
    for el, d in result.logdet_per_element.items():
        print(f"  {el}: log|det| of the active set {_fmt(d.before)} -> {_fmt(d.after)} "
              f"(gain {d.gain:.2f}, rank {d.rank}/{d.size})")
    print(f"  structures {result.files['structures']}\n  report     {result.files['report']}")
    return 0


# ----------------------------------------------------------------------------- direct_sample
def add_direct_sample_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser)
    add_scheduler_flag(parser)
    add_flag(parser, "input", type=Path, required=True, help="raw pool of structures (extxyz; no labels needed)")
    add_flag(parser, "output", type=Path, required=True,
             help="extxyz of the picks; report JSON, PCA plot and descriptor basis go next to it")
    add_flag(parser, "n_clusters", type=int, required=True, help="number of BIRCH clusters")
    add_flag(parser, "k-per-cluster", type=int, default=None, help="structures picked per cluster (default 1)")
    add_flag(parser, "selection", choices=SELECTIONS, default=None,
             help="which members of a cluster: center (default), random, smallest (fewest atoms)")
    add_flag(parser, "potential", type=Path, default=None,
             help="use this potential's B-basis as descriptor (default: an unfitted basis for the pool's elements)")
    add_flag(parser, "seed", type=non_negative_int, default=None, help="seed of random choices (default: config or 42)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PCA plot")


def run_direct_sample(args: argparse.Namespace) -> int:
    from pace_worker.commands.direct_sample import DirectSampleRequest, direct_sample
    from pace_worker.parallel.slurm_cluster import workers_for

    config, meta = load_configs(args)
    with workers_for(meta):
        result = direct_sample(DirectSampleRequest(
            input=args.input, output=args.output, n_clusters=args.n_clusters, k_per_cluster=args.k_per_cluster,
            selection=args.selection, potential=args.potential, seed=args.seed, config=config, meta=meta,
            show_progress=False if args.no_progress else None, plots=not args.no_plots))
    sizes, cov = result.cluster_sizes, result.coverage
    print(f"picked {len(result.picks)} of {result.n_usable} usable structures ({result.n_read} read, "
          f"{result.n_unknown_elements} with elements outside the basis) in {result.wall_time_s:.1f} s")
    print(f"PCA: {result.n_components} components ({result.pca_rule}), "
          f"{100 * result.explained_variance:.1f}% of the variance; BIRCH: {len(sizes)} clusters "
          f"(sizes {min(sizes)}-{max(sizes)}, median {result.cluster_size_median:g})")
    print(f"coverage ({cov.bins} bins per PC): DIRECT {cov.direct:.3f}, random {cov.random:.3f}")
    for key, path in result.files.items():
        print(f"  {key:16s} {path.resolve()}")
    return 0


# ----------------------------------------------------------------------------- demo
def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "workdir", type=Path, default=Path("runs/demo"), help="where everything is written (runs/demo)")
    add_flag(parser, "iterations", type=int, default=5,
             help="trained potentials per strategy and seed at most: the label budget (default 5)")
    add_flag(parser, "strategy", choices=tuple(STRATEGIES), default="maxvol",
             help="selection strategy (default maxvol)")
    add_flag(parser, "compare", choices=tuple(STRATEGIES), nargs="*", default=[],
             help="also run the loop with these strategies and the same label budget (e.g. random)")
    seeds = parser.add_mutually_exclusive_group()
    add_flag(seeds, "seeds", type=non_negative_int, nargs="+", default=[0, 1, 2],
             help="seeds of the pool, MD and random choices; the loop runs once per seed (default 0 1 2)")
    add_flag(seeds, "seed", type=non_negative_int, default=None, help="one seed only (same as --seeds N)")
    add_flag(parser, "labels-per-iteration", type=int, default=8, help="structures labelled per iteration")
    add_flag(parser, "target", type=float, default=50.0,
             help="test force RMSE (meV/Å) a strategy's loop stops at; labels to reach it are reported (50)")
    parser.add_argument("--no-progress", action="store_true", help="never show progress bars")


def run_demo(args: argparse.Namespace) -> int:
    from pace_worker.commands.demo import BROKEN_FORCE_ERROR, DemoRequest, active_learning_demo, labels_to_target_table

    if args.iterations < 1:
        raise InputError(f"--iterations {args.iterations}: must be at least 1")
    if args.labels_per_iteration < 1:
        raise InputError(f"--labels-per-iteration {args.labels_per_iteration}: must be at least 1")
    if not args.target > 0:
        raise InputError(f"--target {args.target}: must be a test force RMSE above 0 meV/Å")
    strategies = list(dict.fromkeys([args.strategy, *args.compare]))
    seeds = [args.seed] if args.seed is not None else list(dict.fromkeys(args.seeds))
    result = active_learning_demo(DemoRequest(workdir=args.workdir, iterations=args.iterations,
                                              strategies=strategies, seeds=seeds,
                                              labels_per_iteration=args.labels_per_iteration,
                                              target_force_rmse=args.target,
                                              show_progress=False if args.no_progress else None))
    print(f"\n{'seed':>4s} {'strategy':10s} {'iter':>4s} {'labels':>6s} {'E RMSE meV/at':>13s} {'F RMSE meV/A':>12s} "
          f"{'broken':>6s} {'explore max γ':>13s} {'candidates':>10s} {'wall s':>7s}")
    for r in result.rows:
        print(f"{r.seed:>4d} {r.strategy:10s} {r.iteration:>4d} {r.labels:>6d} {r.energy_rmse_mev_per_atom:>13.2f} "
              f"{r.force_rmse_mev_per_A:>12.1f} {r.broken_test_structures:>6d} {_fmt(r.exploration_gamma_max):>13s} "
              f"{'-' if r.candidates is None else r.candidates:>10} {r.wall_time_s:>7.1f}")
    print(f"broken: test structures whose worst force error exceeds {BROKEN_FORCE_ERROR / 1000:g} eV/Å "
          f"(holes of the potential)\n")
    print(labels_to_target_table(result))
    print(f"\nwall time {result.wall_time_s:.0f} s")
    for key, path in result.files.items():
        print(f"  {key:15s} {path}")
    return 0


COMMANDS: list[Command] = [
    Command("train", "fit an ACE potential with pacemaker (writes .yaml, .yace, .asi, metrics)",
            add_train_arguments, run_train),
    Command("sample", "pick the N candidates the potential is least sure about (γ, D-optimal MaxVol)",
            add_sample_arguments, run_sample),
    Command("direct_sample", "pick a diverse subset of a raw pool (ACE descriptors, PCA, BIRCH: DIRECT)",
            add_direct_sample_arguments, run_direct_sample, aliases=("direct-sample",)),
    Command("demo", "active learning with EMT as the labeller: labels to a target error, over seeds",
            add_demo_arguments, run_demo),
    Command("validate", "errors of a potential on a test set (JSON, per-structure CSV, PNG plots)",
            add_validate_arguments, run_validate),
]


# ----------------------------------------------------------------------------- plumbing
def configure_logging(level: str = "INFO") -> None:
    logger = logging.getLogger("pace_worker")
    if not any(getattr(h, "_pace_worker", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s pace-worker %(levelname)s %(message)s", "%H:%M:%S"))
        handler._pace_worker = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="pace-worker", description="The Pacemaker (ACE) worker of an active-learning pipeline.",
        epilog="Exit status: 0 ok, 1 the work failed, 2 bad input, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"pace-worker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for command in COMMANDS:
        p = sub.add_parser(command.name, aliases=list(command.aliases), help=command.help,
                           description=command.help)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging("INFO")
    interrupts.install()
    _skip_the_final_collection_at_exit()
    prog = f"pace-worker {args.command}"
    then = " (rerun the same iteration to resume the fit)" if args.command == "train" else ""
    try:
        status = args._run(args)
        interrupts.check()  # a signal whose exception was lost still stops the command
        return status
    except InputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (FitError, DiskFull) as exc:
        print(f"{prog}: failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; outputs left as they were{then}", file=sys.stderr)
        _end_stopped(130)
    except Terminated:
        print(f"{prog}: terminated; outputs left as they were{then}", file=sys.stderr)
        _end_stopped(143)
    except OSError as exc:
        if exc.errno not in DISK_FULL or os.environ.get("PACE_WORKER_DEBUG"):
            return _internal_error(prog, exc)
        where = f" writing '{exc.filename}'" if exc.filename else ""
        print(f"{prog}: failed: the file system is full ({os.strerror(exc.errno)}{where}); free space there or "
              "write elsewhere, and rerun. Earlier outputs are as they were", file=sys.stderr)
        return DiskFull.exit_code
    except Exception as exc:
        return _internal_error(prog, exc)


def _skip_the_final_collection_at_exit() -> None:
    """At exit (an atexit handler; the command's outputs are closed by then, and the other handlers,
    logging's flush and the joins of worker processes, run as before), move every object to the
    collector's permanent generation (``gc.freeze``), so that the interpreter's last collections do
    not walk them all once more: with SciPy and ASE's ``io`` imported, that walk took 0.3-0.4 s after
    every command's work was done (``import ase.io`` alone: 0.22 s, frozen 0.04 s). The process's
    memory goes back to the system as it ends, walked or not. Once per process however often
    ``main`` runs in it (the tests call it in-process): a registration made before is removed first."""
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def _end_stopped(status: int) -> None:
    """A stopped command ends here, at once: its own cleanup has run while the signal's exception
    unwound (outputs put back, staged files removed, workers and the fit process stopped), and
    the interpreter's own finalization is skipped — a worker pool stopped in the middle of its
    work can leave finalizers there that wait forever."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _internal_error(prog: str, exc: Exception) -> int:
    """A bug: one line, the traceback only on request."""
    if os.environ.get("PACE_WORKER_DEBUG"):
        raise exc
    print(f"{prog}: internal error: {type(exc).__name__}: {exc} "
          "(rerun with PACE_WORKER_DEBUG=1 for the traceback)", file=sys.stderr)
    return 1
