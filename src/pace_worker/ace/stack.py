"""The ace layer's name for :mod:`pace_worker.stack` (the ICAMS stack imported without side effects)."""
from pace_worker.stack import import_pyace, stack_versions  # noqa: F401
