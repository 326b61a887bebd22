"""What a worker process loads once and reuses for every chunk (a potential, a basis, an active
set), under a name and the key it was loaded from.

A worker initializer calls :func:`load`; a second call with the same key is a no-op, so worker
processes forked after the parent loaded it inherit it and do not read the files again. Worker
functions read it back with :func:`loaded`.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, TypeVar

T = TypeVar("T")

_STATE: dict[str, tuple[Hashable, Any]] = {}


def load(name: str, key: Hashable, loader: Callable[[], T]) -> T:
    """The state ``name`` of this process, (re)built by ``loader()`` unless loaded for ``key``."""
    current = _STATE.get(name)
    if current is None or current[0] != key:
        _STATE[name] = (key, loader())
    return _STATE[name][1]


def loaded(name: str) -> Any:
    """The state ``name`` of this process; an error if its initializer has not run here."""
    if name not in _STATE:
        raise RuntimeError(f"{name} was not loaded in this process (its worker initializer did not run)")
    return _STATE[name][1]
