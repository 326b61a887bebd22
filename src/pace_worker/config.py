"""config.yaml (the science) and meta_config.yaml (the environment): loading and validation.

``config.yaml`` holds pacemaker settings, either

* at top level (a plain pacemaker ``input.yaml`` works as it is),
* under ``pacemaker:``, or
* under ``ace_model: {pacemaker_config: ...}`` (a layout some orchestrators use),

next to the sections of the other commands (``sample``, ``direct_sample``, ``validate``).
Unknown keys are errors that name the key and suggest the closest valid one.

``meta_config.yaml`` is shared with other workers: unknown keys there are ignored (logged at
debug level). Relative paths in it are resolved against the folder of the meta_config file.
"""
from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pace_worker.errors import InputError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- YAML reading
def load_yaml_mapping(path: Union[str, Path], what: str) -> dict:
    """Read a YAML file that must hold a mapping; errors name the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} '{path}' does not exist; give the path of a YAML file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{what} '{path}' cannot be read ({exc.strerror}); check its permissions")
    try:
        data = yaml.safe_load(text)
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
Selection = Literal["center", "random", "smallest"]
SELECTIONS: tuple[str, ...] = get_args(Selection)

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    loss: dict = Field(default_factory=lambda: {"kappa": 0.3, "L1_coeffs": 1e-8, "L2_coeffs": 1e-8})
    weighting: Optional[dict] = None
    optimizer: str = "BFGS"
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

    seed: int = 42
    cutoff: float = Field(6.0, gt=0)
    metadata: Optional[dict] = None
    data: DataSection = Field(default_factory=DataSection)
    potential: Union[PotentialSection, str, None] = None
    fit: FitSection = Field(default_factory=FitSection)
    backend: BackendSection = Field(default_factory=BackendSection)


PACEMAKER_KEYS = set(PacemakerSettings.model_fields)
COMMAND_SECTIONS = {"train", "sample", "direct_sample", "validate"}
LAYOUT_KEYS = {"pacemaker", "ace_model"}


class TrainOptions(_Strict):
    """``train:`` — pace-worker's own options of the train command."""

    active_set_gamma_tolerance: float = Field(1.01, ge=1.0)
    maxvol_iters: int = Field(300, ge=1)


class DescriptorSettings(_Strict):
    """``direct_sample.descriptor:`` — the unfitted ACE basis used as DIRECT's encoder when no
    potential is given (see :mod:`pace_worker.descriptors`)."""

    cutoff: float = Field(5.0, gt=0)
    functions_per_element: int = Field(128, ge=1)
    nradmax_by_orders: list[int] = Field(default_factory=lambda: [8, 4, 2])
    lmax_by_orders: list[int] = Field(default_factory=lambda: [0, 6, 2])


class DirectSampleOptions(_Strict):
    """``direct_sample:`` — DIRECT sampling settings (see :mod:`pace_worker.direct_sample`)."""

    descriptor: DescriptorSettings = Field(default_factory=DescriptorSettings)
    potential: Optional[str] = None
    n_components: Optional[int] = Field(None, ge=1)
    weight_components: bool = True  # scale kept PCs by explained-variance ratio (DIRECT); False: plain PCs
    k_per_cluster: int = Field(1, ge=1)
    selection: Selection = "center"
    seed: int = 42
    birch_threshold: Optional[float] = Field(None, gt=0)
    coverage_bins: Optional[int] = Field(None, ge=2)  # None: min(50, number of picks)


class WorkerConfig(BaseModel):
    """The whole config.yaml after layout normalisation."""

    model_config = ConfigDict(extra="forbid")
    source: Optional[Path] = None
    pacemaker: PacemakerSettings = Field(default_factory=PacemakerSettings)
    train: TrainOptions = Field(default_factory=TrainOptions)
    sample: dict = Field(default_factory=dict)
    direct_sample: DirectSampleOptions = Field(default_factory=DirectSampleOptions)
    validate_: dict = Field(default_factory=dict, alias="validate")

    def resolve_path(self, value) -> Path:
        """A path written in config.yaml: relative paths are relative to the config file's folder."""
        path = Path(value)
        if path.is_absolute() or self.source is None:
            return path
        return Path(self.source).parent / path


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(str(key), sorted(valid), n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(valid))}"


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
    raise InputError(f"config '{path}': key '{dotted}': {err['msg']} (got {err.get('input')!r})")


def load_worker_config(path: Union[str, Path, None]) -> WorkerConfig:
    """Read and validate config.yaml; ``None`` gives all defaults."""
    if path is None:
        return WorkerConfig()
    path = Path(path)
    raw = load_yaml_mapping(path, "config")
    layouts = [k for k in ("pacemaker", "ace_model") if k in raw]
    top_level_pacemaker = {k: raw[k] for k in raw if k in PACEMAKER_KEYS}
    if len(layouts) + bool(top_level_pacemaker) > 1:
        found = layouts + (["top level"] if top_level_pacemaker else [])
        raise InputError(f"config '{path}': pacemaker settings are given in more than one place "
                         f"({', '.join(found)}); keep one of them")
    prefix = ""
    if "pacemaker" in raw:
        pacemaker_raw, prefix = raw["pacemaker"] or {}, "pacemaker"
    elif "ace_model" in raw:
        ace_model = raw["ace_model"] or {}
        if not isinstance(ace_model, dict) or set(ace_model) - {"pacemaker_config"}:
            extra = sorted(set(ace_model) - {"pacemaker_config"}) if isinstance(ace_model, dict) else ace_model
            raise InputError(f"config '{path}': under 'ace_model' only 'pacemaker_config' is known, got {extra}")
        pacemaker_raw, prefix = ace_model.get("pacemaker_config") or {}, "ace_model.pacemaker_config"
    else:
        pacemaker_raw = top_level_pacemaker
    if not isinstance(pacemaker_raw, dict):
        raise InputError(f"config '{path}': '{prefix}' must be a mapping of pacemaker settings")

    for key in raw:
        if key not in PACEMAKER_KEYS | COMMAND_SECTIONS | LAYOUT_KEYS:
            valid = PACEMAKER_KEYS | COMMAND_SECTIONS | LAYOUT_KEYS
            raise InputError(f"config '{path}': unknown key '{key}', {_suggest(key, valid)}")
    try:
        pacemaker = PacemakerSettings.model_validate(pacemaker_raw)
    except ValidationError as exc:
        _raise_validation(exc, path, prefix, PacemakerSettings)
    try:
        train = TrainOptions.model_validate(raw.get("train") or {})
    except ValidationError as exc:
        _raise_validation(exc, path, "train", TrainOptions)
    try:
        direct_sample = DirectSampleOptions.model_validate(raw.get("direct_sample") or {})
    except ValidationError as exc:
        _raise_validation(exc, path, "direct_sample", DirectSampleOptions)
    sections = {}
    for name in ("sample", "validate"):
        value = raw.get(name) or {}
        if not isinstance(value, dict):
            raise InputError(f"config '{path}': '{name}' must be a mapping")
        sections[name] = value
    return WorkerConfig(source=path, pacemaker=pacemaker, train=train, direct_sample=direct_sample, **sections)


# ----------------------------------------------------------------------------- meta_config
class DaskSettings(BaseModel):
    """``dask:`` in meta_config.yaml — run chunks on an existing Dask cluster instead of local processes."""

    model_config = ConfigDict(extra="ignore")
    scheduler_address: Optional[str] = None  # e.g. tcp://host:8786; None: local worker processes
    connect_timeout_s: float = Field(15.0, gt=0)
    chunks_per_task: int = Field(8, ge=1)  # most consecutive chunks per Dask task (a Dask task costs ~20 ms)


class MetaConfig(BaseModel):
    """meta_config.yaml: where and how to run. Shared with other workers: extra keys ignored."""

    model_config = ConfigDict(extra="ignore")
    device: str = "auto"
    threads: Optional[int] = Field(None, ge=1)
    output_dir: Optional[Path] = None
    work_dir: Optional[Path] = None
    log_level: str = "INFO"
    workers: Optional[int] = Field(None, ge=1)
    chunk_size: int = Field(16, ge=1)
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
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise InputError(f"meta_config '{path}': key '{key}': {err['msg']} (got {err.get('input')!r})")
    base = path.parent
    for name in ("output_dir", "work_dir"):
        value = getattr(meta, name)
        if value is not None and not value.is_absolute():
            setattr(meta, name, (base / value).resolve())
    return meta
