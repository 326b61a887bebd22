"""Which potential, active set and test set a command uses when the orchestrator names none.

One rule for every such file: **the flag > the config.yaml key (relative to config.yaml) > the
file the documented default names** (:func:`flag_config_or_default`). The defaults:

* ``sample`` — potential: ``output_potential.yaml`` in the output folder
  (``meta_config.output_dir``, else the candidates' folder); active set: the ``.asi`` beside
  the potential. A ``.yace`` is replaced by the ``.yaml`` beside it (a .yace cannot give γ).
* ``validate`` — active set: the ``.asi`` beside the potential's B-basis ``.yaml``, if there is
  one (else no γ); test set: the test set ``train`` recorded in ``train_metrics.json`` next to
  the potential, else ``test_set.xyz`` next to it. A path given by a flag or a config key is
  never replaced by a default: if it names no file, that is the error.
* ``direct_sample`` — descriptor basis: no default (an unfitted basis is built instead).
* ``train`` — initial potential: ``--initial-potential`` > the one entry of
  ``ace_model.initial_potentials`` (see :mod:`pace_worker.commands.train`).

Nothing here reads a potential or an active set (:mod:`pace_worker.ace.activeset` checks them);
the functions return paths and where they came from (for messages and reports).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pace_worker.config import WorkerConfig
from pace_worker.errors import InputError, missing_reason


@dataclass(frozen=True)
class Found:
    """A path and the rule that gave it (``--asi``, ``config sample.asi``, ...); path None: none."""

    path: Optional[Path]
    source: str
    by_default: bool = False  # neither a flag nor config.yaml named it


def documented_default(path: Optional[Path], name: str = "") -> Found:
    """The file a documented default names (``name`` says which rule, for messages)."""
    return Found(path, name, by_default=True)


def flag_config_or_default(flag: Optional[Path], flag_name: str, configured: Optional[str], key: str,
                           config: WorkerConfig, default: Found = documented_default(None)) -> Found:
    """The flag's path, else config.yaml's ``key`` (relative to config.yaml), else ``default``
    (see :func:`documented_default`)."""
    if flag is not None:
        return Found(Path(flag), flag_name)
    if configured:
        return Found(config.resolve_path(configured), f"config {key}")
    return default


# ----------------------------------------------------------------------------- sample
def sample_potential_files(potential: Optional[Path], asi: Optional[Path], config: WorkerConfig, output_dir,
                           candidates: Path) -> tuple[Found, Found]:
    """``(potential as found, its .asi)`` for ``sample``; nothing is read."""
    folder = Path(output_dir or Path(candidates).resolve().parent)
    in_output_folder = documented_default(folder / "output_potential.yaml", "the output folder's potential")
    found = flag_config_or_default(potential, "--potential", config.sample.potential, "sample.potential", config,
                                   in_output_folder)
    if found.by_default and not found.path.is_file():
        raise InputError(f"no potential given and no '{found.path}' found; give --potential (the B-basis .yaml "
                         "written by train) or set sample.potential in config.yaml")
    beside = documented_default(found.path.with_suffix(".asi"), "the .asi beside the potential")
    return found, flag_config_or_default(asi, "--asi", config.sample.asi, "sample.asi", config, beside)


# ----------------------------------------------------------------------------- validate
def validate_active_set_file(asi: Optional[Path], config: WorkerConfig, b_basis: Optional[Path]) -> Found:
    """The active set ``validate`` would use, not yet checked (path None: γ is not computed)."""
    beside = b_basis.with_suffix(".asi") if b_basis is not None else None
    found = flag_config_or_default(asi, "--asi", config.validate_.asi, "validate.asi", config,
                                   documented_default(beside, "the .asi beside the potential's B-basis"))
    if found.by_default and (beside is None or not beside.is_file()):
        return Found(None, "no active set", by_default=True)
    return found


def find_test_set(test_set: Optional[Path], config: WorkerConfig, potential: Path) -> Found:
    """The test set for ``validate``: the first of the rules that names an existing file."""
    if test_set is not None:
        return Found(Path(test_set), "--test-set")
    tried = []
    configured = config.validate_.test_set
    if configured:  # a path the user wrote down is never replaced by a default
        path = config.resolve_path(configured)
        if not path.exists():
            raise InputError(f"test set '{path}' (validate.test_set in config '{config.source}') "
                             f"{missing_reason(path)}; fix the path (relative to config.yaml) or remove the key")
        return Found(path, "config validate.test_set")
    folder = Path(potential).parent
    metrics_file = folder / "train_metrics.json"
    if metrics_file.is_file():
        try:
            recorded = json.loads(metrics_file.read_text()).get("outputs", {}).get("test_set")
        except (json.JSONDecodeError, AttributeError):
            recorded = None
        if recorded and Path(recorded).is_file():
            return Found(Path(recorded), "train_metrics.json")
        tried.append(f"{metrics_file} (records {recorded or 'no test set'})")
    else:
        tried.append(f"{metrics_file} (missing)")
    default = folder / "test_set.xyz"
    if default.is_file():
        return Found(default, "test_set.xyz next to the potential")
    tried.append(f"{default} (missing)")
    raise InputError(f"no test set found for potential '{potential}'; tried --test-set (not given), "
                     f"{'; '.join(tried)}; give one with --test-set")


# ----------------------------------------------------------------------------- direct_sample
def descriptor_potential_file(potential: Optional[Path], config: WorkerConfig) -> Found:
    """The potential whose B-basis ``direct_sample`` uses as descriptor (path None: an unfitted basis)."""
    return flag_config_or_default(potential, "--potential", config.direct_sample.potential,
                                  "direct_sample.potential", config)
