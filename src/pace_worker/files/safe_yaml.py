"""YAML that a hostile file cannot turn into a memory or time bomb.

YAML's aliases let a few hundred bytes stand for a billion values ("billion laughs": nine
levels of ten aliases each). The parser builds them as shared nodes quickly; whatever walks the
result afterwards (validation, a copy, a dump) expands them and runs out of memory. So
:func:`load_yaml` composes the document first and counts the values it stands for, aliases
expanded (each distinct node once: a linear walk): above :data:`MAX_VALUES`, or an alias that
contains itself, it refuses the file in one line before anything is built. A file larger than
:data:`MAX_BYTES` is refused unread; nesting deeper than the parser's limit is a syntax error.
Plain safe loading otherwise (``yaml.SafeLoader``: no Python objects).
"""
from __future__ import annotations

from typing import Any

import yaml

from pace_worker.errors import InputError

MAX_BYTES = 16 * 1024 ** 2   # a config.yaml, meta_config.yaml or potential of this size is not one
MAX_VALUES = 1_000_000       # scalars, lists and mappings the document stands for, aliases expanded

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def expanded_size(node: yaml.Node, limit: int = MAX_VALUES) -> int:
    """The number of nodes ``node`` stands for with every alias expanded (stops counting above
    ``limit``); ``ValueError`` for a node that contains itself."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        key = id(current)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(current))
            sizes[key] = min(total, limit + 1)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ValueError("an alias that contains itself")
        on_path.add(key)
        stack.append((current, True))
        stack.extend((child, False) for child in _children(current) if id(child) not in sizes)
    return sizes[id(node)]


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml(text: str, where: str) -> Any:
    """The document in ``text`` (safe loading), or an :class:`InputError` naming ``where`` for an
    oversized, self-containing or alias-bombed document. YAML syntax errors are raised as they
    are (``yaml.YAMLError``, with the line and column) for the caller to word."""
    if len(text) > MAX_BYTES:
        raise InputError(f"{where} is {len(text) / 1024 ** 2:.0f} MiB; a YAML file of more than "
                         f"{MAX_BYTES // 1024 ** 2} MiB is not read")
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = expanded_size(node)
        except ValueError as exc:
            raise InputError(f"{where}: YAML {exc} (an alias inside its own anchor); write the values out")
        if size > MAX_VALUES:
            raise InputError(f"{where}: its YAML aliases expand to more than {MAX_VALUES:,} values (an alias bomb?); "
                             "the file is refused: write the values out instead of nesting aliases")
        return loader.construct_document(node)
    except RecursionError:
        raise InputError(f"{where}: YAML nested too deeply to read; flatten it") from None
    finally:
        loader.dispose()
