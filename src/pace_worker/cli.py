"""The command line: ``pace-worker <command>``, ``python -m pace_worker``, ``python src/main.py``.

Each command is one entry of :data:`COMMANDS`: a function that adds its flags to a parser and
a function that runs it from the parsed flags and returns an exit status. Commands map to
pure core functions (``pace_worker.train.train`` …); this layer only parses, prints, and turns
errors into exit statuses:

* 0 — success;
* 1 — the work itself failed (e.g. pacemaker crashed); outputs untouched;
* 2 — bad input (one line on stderr naming the file / structure / key and what to do);
* 130 — interrupted.

Spellings: a command may have aliases (``direct_sample`` / ``direct-sample``) and flags may
have both ``_`` and ``-`` forms (``--n_samples`` / ``--n-samples``); see :func:`add_flag`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from pace_worker import __version__
from pace_worker.errors import FitError, InputError

log = logging.getLogger("pace_worker")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    aliases: tuple[str, ...] = ()


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
    add_flag(parser, "output-dir", type=Path, default=None,
             help="output folder (default: meta_config output_dir, else the input's folder)")
    parser.add_argument("--no-progress", action="store_true", help="never show progress bars")


# ----------------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser)
    add_flag(parser, "dataset", type=Path, required=True, help="labelled structures: extxyz (.xyz[.gz]) or .pckl.gzip")
    add_flag(parser, "iteration", type=int, required=True, help="active-learning iteration (archive folder and seed)")
    add_flag(parser, "initial-potential", type=Path, default=None,
             help="continue from this potential (.yaml; a .yace needs its .yaml next to it)")
    add_flag(parser, "potential-yaml", type=Path, default=None, help="B-basis YAML that replaces the potential section")
    add_flag(parser, "asi", type=Path, default=None,
             help="active set of the previous potential: reports how new the data were for it")


def run_train(args: argparse.Namespace) -> int:
    from pace_worker.config import load_meta_config, load_worker_config
    from pace_worker.train import TrainRequest, train

    config = load_worker_config(args.config)
    meta = load_meta_config(args.meta_config)
    configure_logging(meta.log_level)
    result = train(TrainRequest(dataset=args.dataset, iteration=args.iteration, config=config, meta=meta,
                                initial_potential=args.initial_potential, potential_yaml=args.potential_yaml,
                                asi=args.asi, output_dir=args.output_dir,
                                show_progress=False if args.no_progress else None))
    print_train_summary(result)
    return 0


def print_train_summary(result) -> None:
    m = result.metrics

    def fmt(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    print(f"iteration {m['iteration']} ({m['mode']}): {m['fit']['n_functions']} functions, "
          f"{m['fit']['iterations']} optimizer steps, {m['wall_time_s']:.1f} s, device {m['device'].get('used', '?')}")
    print(f"{'set':6s} {'structures':>10s} {'E RMSE meV/at':>14s} {'E MAE':>8s} {'F RMSE meV/A':>13s} {'F MAE':>8s}")
    for name in ("train", "test"):
        s = m.get(name)
        if s:
            print(f"{name:6s} {s['n_structures']:>10d} {fmt(s['energy_rmse_mev_per_atom']):>14s} "
                  f"{fmt(s['energy_mae_mev_per_atom']):>8s} {fmt(s['force_rmse_mev_per_A']):>13s} "
                  f"{fmt(s['force_mae_mev_per_A']):>8s}")
    a = m["active_set"]
    if a.get("written"):
        print(f"active set: max γ over the training set {a['train_gamma_max']:.3f}")
    else:
        print(f"active set: not written ({a.get('reason')})")
    for key, path in m["outputs"].items():
        if path:
            print(f"  {key:9s} {path}")


COMMANDS: list[Command] = [
    Command("train", "fit an ACE potential with pacemaker (writes .yaml, .yace, .asi, metrics)",
            add_train_arguments, run_train),
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
    parser = argparse.ArgumentParser(
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
    prog = f"pace-worker {args.command}"
    try:
        return args._run(args)
    except InputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except FitError as exc:
        print(f"{prog}: failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; outputs left as they were", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("PACE_WORKER_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} "
              "(rerun with PACE_WORKER_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
