"""config.yaml (the science) and meta_config.yaml (the environment): loading and validation.

``config.yaml`` is the whole pipeline's file. It holds pacemaker settings, either

* at top level (a plain pacemaker ``input.yaml`` works as it is),
* under ``pacemaker:``, or
* under ``ace_model: {pacemaker_config: ...}`` (the pipeline's layout),

next to pace-worker's own sections (``train``, ``sample``, ``direct_sample``, ``validate``) and
the sections of the pipeline's other workers (``experiment``, ``dft_params``, ``md_params``, ...).

* A top-level key that is neither ours nor pacemaker's belongs to another worker and is ignored
  (named once in the log), unless it is a near miss of one of ours or of pacemaker's
  (``cutof``): that is an error with the suggestion.
* ``ace_model`` may carry orchestrator keys besides ``pacemaker_config``; they are ignored the
  same way, except ``initial_potentials`` (a list of potentials to start from; one entry is
  used as ``--initial-potential`` when that flag is absent).
* Inside the pacemaker settings and inside our own sections everything is strict: an unknown
  key is an error that names it and suggests the closest valid one (or pacemaker's spelling of
  a key from another format, such as ``max_iter`` → ``fit.maxiter``).

``meta_config.yaml`` is shared with other workers: unknown keys there are ignored (logged at
debug level). Relative paths in it are resolved against the folder of the meta_config file.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from pace_worker.algorithms.cluster_picks import SELECTIONS
from pace_worker.algorithms.sample_strategies import STRATEGIES
from pace_worker.errors import InputError, closest_name, did_you_mean, missing_reason
from pace_worker.files.safe_yaml import MAX_BYTES, load_yaml

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- YAML reading
def load_yaml_mapping(path: Union[str, Path], what: str) -> dict:
    """Read a YAML file that must hold a mapping; errors name the file (and line). Alias bombs and
    oversized files are refused (:mod:`pace_worker.files.safe_yaml`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} '{path}' {missing_reason(path)}; give the path of a YAML file")
    if not path.is_file():
        raise InputError(f"{what} '{path}' is not a file; give the path of a YAML file")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise InputError(f"{what} '{path}' is {path.stat().st_size / 1024 ** 2:.0f} MiB; a YAML file of more "
                             f"than {MAX_BYTES // 1024 ** 2} MiB is not read")
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise InputError(f"{what} '{path}' cannot be read ({exc.strerror}); check its permissions")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputError(f"{what} '{path}' is not UTF-8 text (byte {exc.start}, line {line}); save it as UTF-8")
    try:
        data = load_yaml(text, f"{what} '{path}'")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{what} {where}: YAML syntax error ({problem}); fix the YAML at that line")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{what} '{path}' must be a YAML mapping (key: value), got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- pacemaker sections
# which members of a DIRECT cluster are picked (direct_sample)
Selection = Literal[SELECTIONS]
# the optimizers of pacemaker's tensorpot backend (tensorpotential.compat.pace.fit)
Optimizer = Literal["BFGS", "L-BFGS-B", "CG", "trf", "dogbox", "lm", "dual_annealing", "Adam", "SGD"]

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN/inf never reach the science


class LossSection(_Strict):
    """``fit.loss:`` — pacemaker's loss function (``pyace.lossfuncspec.LossFunctionSpecification``)."""

    kappa: float = Field(0.3, ge=0, le=1)  # energy vs force weight
    L1_coeffs: float = Field(1e-8, ge=0)
    L2_coeffs: float = Field(1e-8, ge=0)
    w0_rad: Optional[float] = Field(None, ge=0)
    w1_rad: Optional[float] = Field(None, ge=0)
    w2_rad: Optional[float] = Field(None, ge=0)
    w_orth: Optional[float] = Field(None, ge=0)


class DataSection(_Strict):
    """``data:`` — pacemaker's data section plus how pace-worker reads labels.

    ``filename`` and ``datapath`` are ignored (the dataset comes from ``--dataset``).
    """

    filename: Any = None
    datapath: Any = None
    seed: Any = None
    test_size: float = Field(0.1, ge=0)
    test_filename: Optional[str] = None
    reference_energy: Union[dict[str, float], float, str, None] = "auto"
    aug_factor: Optional[float] = None
    ignore_weights: Optional[bool] = None
    energy_key: Optional[str] = None
    forces_key: Optional[str] = None
    stress_key: Optional[str] = None
    min_distance: float = Field(0.5, ge=0)


class PotentialSection(_Strict):
    deltaSplineBins: float = 0.001
    elements: Optional[list[str]] = None
    embeddings: Optional[dict] = None
    bonds: Optional[dict] = None
    functions: Optional[dict] = None
    initial_potential: Optional[str] = None
    filename: Optional[str] = None
    reset: Optional[bool] = None
    metadata: Optional[dict] = None
    func_coefs_init: Optional[str] = None


class FitSection(_Strict):
    loss: LossSection = Field(default_factory=LossSection)
    weighting: Optional[dict] = None
    optimizer: Optimizer = "BFGS"
    options: Optional[dict] = None
    maxiter: int = Field(1000, ge=0)
    repulsion: Union[str, dict, None] = "auto"
    trainable_parameters: Any = None
    fit_cycles: Optional[int] = None
    noise_relative_sigma: Optional[float] = None
    noise_absolute_sigma: Optional[float] = None
    randomize_func_coeffs: Optional[float] = None
    ladder_step: Any = None
    ladder_type: Optional[str] = None
    min_relative_train_loss_per_iter: Optional[float] = None
    min_relative_test_loss_per_iter: Optional[float] = None
    early_stopping_patience: Optional[int] = None
    callbacks: Optional[list] = None
    # pace-worker's (not passed to pacemaker): wall-time budget of the fit in seconds; when it runs
    # out, pacemaker is stopped and the last potential it reached is published
    max_time: Optional[float] = Field(None, gt=0)


class BackendSection(_Strict):
    evaluator: Literal["tensorpot"] = "tensorpot"
    batch_size: int = Field(100, ge=1)
    batch_size_reduction: Optional[bool] = None
    batch_size_reduction_factor: Optional[float] = None
    display_step: int = Field(50, ge=1)
    gpu_config: Optional[dict] = None
    imagetype: Optional[str] = None
    parallel_mode: Optional[str] = None
    n_workers: Optional[int] = None


class PacemakerSettings(_Strict):
    """The pacemaker part of config.yaml; every section is optional (documented defaults)."""

    seed: int = Field(42, ge=0, lt=2 ** 31 - 100000)  # + iteration seeds the fit
    cutoff: float = Field(6.0, ge=1.0, le=25.0)
    metadata: Optional[dict] = None
    data: DataSection = Field(default_factory=DataSection)
    potential: Union[PotentialSection, str, None] = None
    fit: FitSection = Field(default_factory=FitSection)
    backend: BackendSection = Field(default_factory=BackendSection)


PACEMAKER_KEYS = set(PacemakerSettings.model_fields)
COMMAND_SECTIONS = {"train", "sample", "direct_sample", "validate"}
LAYOUT_KEYS = {"pacemaker", "ace_model"}
OUR_TOP_LEVEL_KEYS = PACEMAKER_KEYS | COMMAND_SECTIONS | LAYOUT_KEYS
NEAR_MISS_CUTOFF = 0.8  # difflib ratio above which an unknown top-level key is taken for a typo of ours

# spellings of other fitting codes / older formats, with pacemaker's spelling (for error messages)
FOREIGN_SPELLINGS = {
    "rcut": "cutoff", "r_cut": "cutoff", "cutoff_radius": "cutoff", "r_max": "cutoff", "rmax": "cutoff",
    "max_iter": "fit.maxiter", "max_iterations": "fit.maxiter", "niter": "fit.maxiter",
    "n_iter": "fit.maxiter", "epochs": "fit.maxiter", "max_epochs": "fit.maxiter", "nepochs": "fit.maxiter",
    "n_epochs": "fit.maxiter", "number_of_functions": "potential.functions.number_of_functions_per_element",
    "n_functions": "potential.functions.number_of_functions_per_element",
    "num_functions": "potential.functions.number_of_functions_per_element",
    "functions_per_element": "potential.functions.number_of_functions_per_element",
    "batchsize": "backend.batch_size", "batch": "backend.batch_size",
    "test_fraction": "data.test_size", "test_split": "data.test_size", "validation_split": "data.test_size",
    "test_ratio": "data.test_size", "train_file": "data.filename", "training_file": "data.filename",
    "dataset": "data.filename", "test_file": "data.test_filename",
    "energy_weight": "fit.loss.kappa", "force_weight": "fit.loss.kappa", "kappa": "fit.loss.kappa",
    "loss_kappa": "fit.loss.kappa", "learning_rate": "fit.optimizer / fit.options",
    "optimiser": "fit.optimizer", "minimizer": "fit.optimizer", "method": "fit.optimizer",
    "species": "potential.elements", "type_map": "potential.elements", "chemical_symbols": "potential.elements",
    "random_seed": "seed", "rng_seed": "seed", "basis": "potential", "model": "potential",
    "evaluator_name": "backend.evaluator", "device": "meta_config.yaml device",
}



SampleStrategy = Literal[tuple(STRATEGIES)]  # the registry's names, in its order


class TrainOptions(_Strict):
    """``train:`` — pace-worker's own options of the train command."""

    active_set_gamma_tolerance: float = Field(1.01, ge=1.0)
    maxvol_iters: int = Field(300, ge=1)
    # with fit.max_time: "auto" plans the stages and the basis for the budget (commands/train_schedule.py);
    # "off" runs pacemaker on the configured basis until the clock stops it
    schedule: Literal["auto", "off"] = "auto"
    # fraction of the training structures held out to choose the published potential (budgeted fits)
    validation_size: float = Field(0.1, ge=0, lt=1)

    @field_validator("schedule", mode="before")
    @classmethod
    def _yaml_booleans(cls, value):
        # YAML 1.1 reads an unquoted `off`/`on` as a boolean: `schedule: off` means "off"
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value


class DescriptorSettings(_Strict):
    """``direct_sample.descriptor:`` — the unfitted ACE basis used as DIRECT's encoder when no
    potential is given (see :mod:`pace_worker.ace.descriptors`)."""

    cutoff: float = Field(5.0, ge=1.0, le=25.0)
    functions_per_element: int = Field(128, ge=1)
    nradmax_by_orders: list[int] = Field(default_factory=lambda: [8, 4, 2], min_length=1, max_length=6)
    lmax_by_orders: list[int] = Field(default_factory=lambda: [0, 6, 2], min_length=1, max_length=6)

    @model_validator(mode="after")
    def _orders_match(self):
        if len(self.nradmax_by_orders) != len(self.lmax_by_orders):
            raise ValueError(f"nradmax_by_orders ({len(self.nradmax_by_orders)} orders) and lmax_by_orders "
                             f"({len(self.lmax_by_orders)}) must have the same length")
        if min(self.nradmax_by_orders) < 1 or min(self.lmax_by_orders) < 0 or self.lmax_by_orders[0] != 0:
            raise ValueError("nradmax_by_orders must be >= 1 and lmax_by_orders >= 0 with lmax_by_orders[0] = 0 "
                             "(pacemaker's rule for pair functions)")
        return self


class DirectSampleOptions(_Strict):
    """``direct_sample:`` — DIRECT sampling settings (see :mod:`pace_worker.commands.direct_sample`)."""

    descriptor: DescriptorSettings = Field(default_factory=DescriptorSettings)
    potential: Optional[str] = None
    n_components: Optional[int] = Field(None, ge=1)
    weight_components: bool = True  # scale kept PCs by explained-variance ratio (DIRECT); False: plain PCs
    k_per_cluster: int = Field(1, ge=1)
    selection: Selection = "center"
    seed: int = Field(42, ge=0)
    birch_threshold: Optional[float] = Field(None, gt=0)
    coverage_bins: Optional[int] = Field(None, ge=2)  # None: min(50, number of picks)
    color_by: Optional[str] = None  # info key that colours the PCA picture (None: config_type, else the formula)


class SampleOptions(_Strict):
    """``sample:`` — settings of the sample command (see :mod:`pace_worker.commands.sample`)."""

    potential: Optional[str] = None  # B-basis .yaml; relative to config.yaml
    asi: Optional[str] = None        # its active set; relative to config.yaml
    strategy: SampleStrategy = "maxvol"
    seed: int = Field(42, ge=0)
    # a candidate is eligible only if its γ against the potential's active set exceeds this (γ ≤ 1:
    # the potential interpolates there, a label teaches it next to nothing); 0: always N picks
    gamma_min: float = Field(1.01, ge=0)  # = train.active_set_gamma_tolerance: training data have γ ≤ 1.01
    gamma_lo: float = Field(1.5, ge=0)
    gamma_hi: float = Field(10.0, gt=0)
    buffer_size: Optional[int] = Field(None, ge=1)  # None: max(20 N, 2000)

    @model_validator(mode="after")
    def _window_not_empty(self):
        if self.gamma_lo > self.gamma_hi:
            raise ValueError(f"gamma_lo ({self.gamma_lo}) must not exceed gamma_hi ({self.gamma_hi})")
        return self


class ValidateOptions(_Strict):
    """``validate:`` — settings of the validate command (see :mod:`pace_worker.commands.validate`)."""

    test_set: Optional[str] = None  # relative to config.yaml
    asi: Optional[str] = None       # relative to config.yaml
    group_by: str = "config_type"   # the info key whose values group the errors
    low_window_ev_per_atom: float = Field(1.0, gt=0)
    n_worst: int = Field(10, ge=0)


class WorkerConfig(BaseModel):
    """The whole config.yaml after layout normalisation."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: Optional[Path] = None
    pacemaker: PacemakerSettings = Field(default_factory=PacemakerSettings)
    train: TrainOptions = Field(default_factory=TrainOptions)
    sample: SampleOptions = Field(default_factory=SampleOptions)
    direct_sample: DirectSampleOptions = Field(default_factory=DirectSampleOptions)
    validate_: ValidateOptions = Field(default_factory=ValidateOptions, alias="validate")
    # ace_model.initial_potentials (the pipeline's list of potentials to start from), as given
    initial_potentials: list[str] = Field(default_factory=list)
    # top-level sections of other workers and ace_model keys of the orchestrator, ignored
    ignored_keys: list[str] = Field(default_factory=list)

    def explicit_setting(self, section: str, name: str) -> bool:
        """Whether config.yaml itself sets ``section.name`` (not the default)."""
        return name in getattr(self, section).model_fields_set

    def initial_potential(self) -> Optional[Path]:
        """The one entry of ``ace_model.initial_potentials`` (relative to config.yaml), if one."""
        if len(self.initial_potentials) == 1:
            return self.resolve_path(self.initial_potentials[0])
        return None

    def resolve_path(self, value) -> Path:
        """A path written in config.yaml: relative paths are relative to the config file's folder."""
        path = Path(value)
        if path.is_absolute() or self.source is None:
            return path
        return Path(self.source).parent / path


def _suggest(key: str, valid) -> str:
    foreign = FOREIGN_SPELLINGS.get(str(key).lower())
    if foreign is not None:
        return f"that is another format's spelling: pacemaker's is '{foreign}'"
    return did_you_mean(key, valid)


def _near_miss(key: str) -> Optional[str]:
    """The key of ours or pacemaker's that an unknown top-level key is a typo of, if any."""
    return closest_name(key, OUR_TOP_LEVEL_KEYS, NEAR_MISS_CUTOFF)


def _valid_keys_at(model: type[BaseModel], loc: tuple) -> set:
    """The field names of the (nested) pydantic model reached by ``loc`` (unknown key's parent)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return set()
        annotation = fields[part].annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return set()
    return set(current.model_fields)


def _raise_validation(exc: ValidationError, path: Path, prefix: str, model: type[BaseModel]) -> None:
    err = exc.errors()[0]
    # pydantic puts the union member's name into the location ("potential.PotentialSection.x")
    clean = tuple(p for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper() and p.endswith("Section")))
    dotted = ".".join(str(p) for p in (prefix, *clean) if p != "")
    if err["type"] == "extra_forbidden":
        valid = _valid_keys_at(model, clean[:-1])
        raise InputError(f"config '{path}': unknown key '{dotted}', {_suggest(clean[-1], valid)}")
    got = repr(err.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    raise InputError(f"config '{path}': key '{dotted}': {err['msg']} (got {got}); fix it in config.yaml")


def _validate_section(model: type[BaseModel], raw, path: Path, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"config '{path}': '{prefix}' must be a mapping (key: value), got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        _raise_validation(exc, path, prefix, model)


def load_worker_config(path: Union[str, Path, None]) -> WorkerConfig:
    """Read and validate config.yaml; ``None`` gives all defaults. See the module docstring."""
    if path is None:
        return WorkerConfig()
    path = Path(path)
    raw = load_yaml_mapping(path, "config")
    ignored: list[str] = []
    for key in raw:
        if key in OUR_TOP_LEVEL_KEYS:
            continue
        near = _near_miss(key)
        if near is not None:
            raise InputError(f"config '{path}': unknown key '{key}', did you mean '{near}'?")
        ignored.append(str(key))

    layouts = [k for k in ("pacemaker", "ace_model") if k in raw]
    top_level_pacemaker = {k: raw[k] for k in raw if k in PACEMAKER_KEYS}
    if len(layouts) + bool(top_level_pacemaker) > 1:
        found = layouts + (["top level"] if top_level_pacemaker else [])
        raise InputError(f"config '{path}': pacemaker settings are given in more than one place "
                         f"({', '.join(found)}); keep one of them")
    prefix = ""
    initial_potentials: list[str] = []
    if "pacemaker" in raw:
        pacemaker_raw, prefix = raw["pacemaker"], "pacemaker"
    elif "ace_model" in raw:
        ace_model = raw["ace_model"] or {}
        if not isinstance(ace_model, dict):
            raise InputError(f"config '{path}': 'ace_model' must be a mapping with 'pacemaker_config', "
                             f"got {type(ace_model).__name__}")
        initial_potentials = _initial_potentials(ace_model.get("initial_potentials"), path)
        for key in ace_model:
            if key in ("pacemaker_config", "initial_potentials"):
                continue
            if closest_name(key, ["pacemaker_config"], NEAR_MISS_CUTOFF):
                raise InputError(f"config '{path}': unknown key 'ace_model.{key}', did you mean "
                                 "'ace_model.pacemaker_config'?")
            ignored.append(f"ace_model.{key}")
        pacemaker_raw, prefix = ace_model.get("pacemaker_config"), "ace_model.pacemaker_config"
    else:
        pacemaker_raw = top_level_pacemaker
    if ignored:
        log.info("config %s: ignoring sections of other workers: %s", path, ", ".join(ignored))

    return WorkerConfig(
        source=path,
        pacemaker=_validate_section(PacemakerSettings, pacemaker_raw, path, prefix),
        train=_validate_section(TrainOptions, raw.get("train"), path, "train"),
        sample=_validate_section(SampleOptions, raw.get("sample"), path, "sample"),
        direct_sample=_validate_section(DirectSampleOptions, raw.get("direct_sample"), path, "direct_sample"),
        validate=_validate_section(ValidateOptions, raw.get("validate"), path, "validate"),
        initial_potentials=initial_potentials, ignored_keys=ignored)


def _initial_potentials(value, path: Path) -> list[str]:
    """``ace_model.initial_potentials``: a list of paths (or one path, or nothing)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"config '{path}': 'ace_model.initial_potentials' must be a list of potential paths, "
                         f"got {value!r}")
    return list(value)


# ----------------------------------------------------------------------------- meta_config
SCHEDULER_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc|ws|wss)://[A-Za-z0-9._\-\[\]:]+:\d{1,5}/?$")


def check_scheduler_address(address: str) -> str:
    """A Dask scheduler address ``tcp://HOST:PORT`` (tls/ucx/ws also), or ValueError saying why."""
    text = str(address).strip()
    if not SCHEDULER_ADDRESS.match(text):
        raise ValueError(f"'{address}' is not a Dask scheduler address; give it as tcp://HOST:PORT "
                         "(e.g. tcp://10.0.0.5:8786)")
    port = int(text.rstrip("/").rsplit(":", 1)[1])
    if not 0 < port < 65536:
        raise ValueError(f"'{address}': port {port} is outside 1-65535")
    return text


# Slurm's time formats (sbatch --time): minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
SLURM_TIME = re.compile(r"^(\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2})$")
# partition, account and job names as they go into an #SBATCH line
SLURM_NAME = re.compile(r"^[A-Za-z0-9._+@%\-]+$")


class SchedulerOptions(BaseModel):
    """``dask.scheduler_options:`` — where the Dask scheduler of a Slurm cluster listens (dask-jobqueue's
    ``scheduler_options``, the keys that matter on a cluster). The dashboard is off unless
    ``dashboard_address`` is given."""

    model_config = ConfigDict(extra="forbid")
    host: Optional[str] = None
    port: int = Field(0, ge=0, le=65535)  # 0: any free port
    interface: Optional[str] = None
    dashboard_address: Optional[str] = None


class DaskSettings(BaseModel):
    """``dask:`` in meta_config.yaml — run chunks on Dask workers instead of local processes: an existing
    cluster (``scheduler_address``) or Slurm jobs that the command starts and stops (``cluster: slurm``).

    The Slurm keys are dask-jobqueue's ``SLURMCluster`` parameters with their names and meaning, per
    job: ``cores``, ``memory`` (both required), ``processes`` (default: ``cores``, i.e. one
    single-threaded worker per core), ``walltime``, ``queue`` (partition), ``account``,
    ``job_script_prologue``, ``job_extra_directives``, ... ``jobs`` is how many jobs to start.
    """

    model_config = ConfigDict(extra="forbid")
    scheduler_address: Optional[str] = None  # e.g. tcp://host:8786; None: local worker processes
    # how long to wait for the scheduler (scheduler_address) or the first worker (cluster: slurm),
    # and for a worker while none is left during a run
    connect_timeout_s: float = Field(15.0, gt=0)
    chunks_per_task: int = Field(8, ge=1)  # most consecutive chunks per Dask task (a task costs far more than a chunk)
    cluster: Optional[Literal["slurm"]] = None  # start the workers as Slurm jobs (dask-jobqueue)
    jobs: int = Field(1, ge=1)
    cores: Optional[int] = Field(None, ge=1)
    processes: Optional[int] = Field(None, ge=1)
    memory: Optional[str] = None
    walltime: Optional[str] = None
    queue: Optional[str] = None
    account: Optional[str] = None
    job_name: str = "pace-worker-dask"
    job_script_prologue: list[str] = Field(default_factory=list)
    job_extra_directives: list[str] = Field(default_factory=list)
    job_directives_skip: list[str] = Field(default_factory=list)
    worker_extra_args: list[str] = Field(default_factory=list)
    interface: Optional[str] = None
    local_directory: Optional[str] = None
    log_directory: Optional[Path] = None
    python: Optional[str] = None
    death_timeout: float = Field(60.0, gt=0)
    scheduler_options: SchedulerOptions = Field(default_factory=SchedulerOptions)

    @field_validator("scheduler_address")
    @classmethod
    def _check_address(cls, value: Optional[str]) -> Optional[str]:
        return None if value in (None, "") else check_scheduler_address(value)

    @field_validator("cluster", mode="before")
    @classmethod
    def _check_cluster_kind(cls, value):
        if value not in (None, "slurm"):
            raise ValueError("the one kind of cluster pace-worker starts is slurm; for another, start a Dask "
                             "cluster yourself and give its dask.scheduler_address")
        return value

    @field_validator("memory")
    @classmethod
    def _check_memory(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        from dask.utils import parse_bytes

        try:
            if parse_bytes(value) <= 0:
                raise ValueError
        except (ValueError, TypeError):
            raise ValueError(f"'{value}' is not an amount of memory; write it like 64GB or 500MiB")
        return value

    @field_validator("walltime", mode="before")
    @classmethod
    def _check_walltime(cls, value):
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("write it as a quoted string, e.g. walltime: \"02:00:00\" (YAML reads an unquoted "
                             "2:00:00 as a number of seconds, and Slurm a bare number as minutes)")
        if not SLURM_TIME.match(value.strip()):
            raise ValueError("not a Slurm time limit; use minutes, MM:SS, HH:MM:SS or D-HH:MM:SS")
        return value.strip()

    @field_validator("queue", "account", "job_name")
    @classmethod
    def _check_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not SLURM_NAME.match(value):
            raise ValueError("a Slurm name has no spaces or special characters (letters, digits, . _ - + @ %)")
        return value

    @field_validator("job_script_prologue", "job_extra_directives", "job_directives_skip", "worker_extra_args",
                     "interface", "local_directory", "python")
    @classmethod
    def _one_line_each(cls, value):
        for item in value if isinstance(value, list) else [value]:
            if item is not None and ("\n" in item or "\r" in item):
                raise ValueError("each entry is one line of the job script; split it into list items")
        return value

    @model_validator(mode="after")
    def _check_cluster(self) -> "DaskSettings":
        slurm_keys = sorted(self.model_fields_set & set(SLURM_KEYS))
        if self.cluster is None and slurm_keys:
            raise ValueError(f"'{slurm_keys[0]}' configures Slurm workers; add 'cluster: slurm' to the dask block "
                             "or remove it")
        if self.cluster == "slurm":
            if self.scheduler_address is not None:
                raise ValueError("give either scheduler_address (an existing cluster) or cluster: slurm (the "
                                 "command starts its workers as Slurm jobs), not both")
            missing = [k for k in ("cores", "memory") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"cluster: slurm needs {' and '.join(missing)} per job (as dask-jobqueue does), "
                                 "e.g. cores: 16, memory: 64GB")
            if self.processes is not None and self.processes > self.cores:
                raise ValueError(f"processes ({self.processes}) cannot exceed cores ({self.cores}): each worker "
                                 "process needs at least one core")
        return self


# the keys of DaskSettings that describe Slurm jobs (meaningless without cluster: slurm)
SLURM_KEYS = ("jobs", "cores", "processes", "memory", "walltime", "queue", "account", "job_name",
              "job_script_prologue", "job_extra_directives", "job_directives_skip", "worker_extra_args",
              "interface", "local_directory", "log_directory", "python", "death_timeout", "scheduler_options")


class MetaConfig(BaseModel):
    """meta_config.yaml: where and how to run. Shared with other workers: extra keys ignored."""

    model_config = ConfigDict(extra="ignore")
    _source: Optional[Path] = PrivateAttr(default=None)  # the file it was read from
    # Dask workers started for this command (dask.cluster: slurm), set by
    # pace_worker.parallel.slurm_cluster.workers_for while the command runs; started on first use
    _dask_cluster: Any = PrivateAttr(default=None)
    device: str = "auto"
    threads: Optional[int] = Field(None, ge=1)
    output_dir: Optional[Path] = None
    work_dir: Optional[Path] = None
    log_level: str = "INFO"
    workers: Optional[int] = Field(None, ge=1)
    chunk_size: int = Field(64, ge=1)
    dask: DaskSettings = Field(default_factory=DaskSettings)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = str(value).strip().lower()
        if value in ("auto", "cpu", "gpu") or (value.startswith("gpu:") and value[4:].isdigit()):
            return value
        raise ValueError("must be auto, cpu, gpu or gpu:N (N = GPU index)")

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        value = str(value).upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @property
    def source(self) -> Optional[Path]:
        return self._source

    @property
    def dask_cluster(self):
        """The on-demand Dask cluster of this command (``dask.cluster: slurm``), or None."""
        return self._dask_cluster

    @property
    def gpu_index(self) -> Optional[int]:
        return int(self.device[4:]) if self.device.startswith("gpu:") else None


def load_meta_config(path: Union[str, Path, None]) -> MetaConfig:
    """Read meta_config.yaml (``None``: defaults). Unknown keys are logged at debug level."""
    if path is None:
        return MetaConfig()
    path = Path(path)
    raw = load_yaml_mapping(path, "meta_config")
    # a nested layout used by some orchestrators: the worker's own block under its name
    for nested in ("pace_worker", "pacemaker"):
        if isinstance(raw.get(nested), dict):
            raw = {**raw, **raw[nested]}
    if "gpu_index" in raw and str(raw.get("device", "auto")).lower() == "gpu":
        raw["device"] = f"gpu:{raw['gpu_index']}"
    unknown = sorted(set(raw) - set(MetaConfig.model_fields))
    if unknown:
        log.debug("meta_config %s: ignoring keys of other workers: %s", path, ", ".join(map(str, unknown)))
    try:
        meta = MetaConfig.model_validate(raw)
    except ValidationError as exc:
        _raise_meta_validation(exc, path)
    meta._source = path
    base = path.parent
    for name in ("output_dir", "work_dir"):
        value = getattr(meta, name)
        if value is not None and not value.is_absolute():
            setattr(meta, name, (base / value).resolve())
    if meta.dask.log_directory is not None and not meta.dask.log_directory.is_absolute():
        meta.dask.log_directory = (base / meta.dask.log_directory).resolve()
    return meta


def _raise_meta_validation(exc: ValidationError, path: Path) -> None:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":  # only our own blocks (dask:) are strict
        valid = _valid_keys_at(MetaConfig, loc[:-1])
        raise InputError(f"meta_config '{path}': unknown key '{key}', {did_you_mean(loc[-1], valid)}")
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and len(loc) <= 1:  # a rule across keys of a block: the message names them
        raise InputError(f"meta_config '{path}': '{key}': {message}")
    got = repr(err.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    raise InputError(f"meta_config '{path}': key '{key}': {message} (got {got})")
