"""Walks over JSON-like values (mappings, lists, scalars), shared by the pure layers.

Owns: `strings`: every string leaf of a value, in document order; what render looks for ``${cluster.*}``
variables in, and what CEL's messages are scrubbed of (an activation's values never reach a message).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def strings(value: Any) -> Iterator[str]:
    """Every string leaf of `value` (mapping values and list items, recursively; keys are not leaves)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from strings(v)
