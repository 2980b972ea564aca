"""`Limits` (the size, count, depth and alias-expansion budgets of a revision, each named in the error
that enforces it) and the loader's errors (`YamlError`, `LimitExceeded`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.core import errors

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Budgets for what one revision may hold. Each is named (by its field name) in the error it raises.

    - `max_file_bytes`: size of one file (cluster file, bundle.yaml or manifest).
    - `max_documents_per_file`: YAML documents (``---``-separated) in one file.
    - `max_files`: files read below ``clusters/`` and ``bundles/`` together.
    - `max_total_bytes`: their total size.
    - `max_alias_expansion`: nodes that YAML aliases would add to one file if expanded.
    - `max_depth`: nesting of mappings and sequences in one document.
    """

    max_file_bytes: int = 16 * MiB
    max_documents_per_file: int = 10_000
    max_files: int = 20_000
    max_total_bytes: int = 256 * MiB
    max_alias_expansion: int = 100_000
    max_depth: int = 100


DEFAULT_LIMITS = Limits()


class YamlError(errors.ValidationError):
    """A file is not valid YAML/JSON, or breaks a rule of the loader (tag, alias cycle)."""


class LimitExceeded(errors.ValidationError):
    """A file or a revision is over one of the `Limits`; the message names the limit."""
