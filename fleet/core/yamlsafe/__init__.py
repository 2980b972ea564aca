"""The limited YAML/JSON loader fleet reads every repository file with, and the limits it enforces.

Owns: `Limits` (the size, count, depth and alias-expansion budgets of a revision, each named in the error
that enforces it), `load_yaml` / `load_json` (bytes -> documents, with the line each document starts on and,
when asked, the line of every field), and `LimitExceeded` / `YamlError`.
Does not: know what a Cluster or a Bundle is (that is `fleet.core.repository`), read files or git (that is
`fleet.clients.source`).

How an alias bomb is stopped before anything expands it: libyaml's C composer (``yaml.CSafeLoader``) builds
a node graph in which an alias is the *same* node object as its anchor, so "a few hundred bytes that expand
to 10^8 nodes" is a graph of a few dozen nodes. Before the Python constructor turns a document into dicts
and lists, `_inspect` walks that graph once (iteratively, no recursion): it counts the nodes every alias
reference would add if expanded (a memoised subtree size), refuses a document whose expansion passes
`Limits.max_alias_expansion`, refuses self-referencing anchors (a cycle in the graph), measures the nesting
depth against `Limits.max_depth` and rejects tags that are not plain JSON values (``!!binary``, ``!!set``,
custom tags). Only then is the document constructed. Memory stays in proportion to the file size.

Every file is read as Kubernetes reads it (`kubectl apply -f`: sigs.k8s.io/yaml, that is go-yaml v2's
YAML 1.1 resolver, turned into JSON, then decoded as an unstructured object), so what fleet applies is what
kubectl would apply for the same file (docs/repository.md, "How YAML is read", says it for users):

- plain scalars resolve by go-yaml v2's rules, not PyYAML's: ``y``/``n``/``yes``/``on``... are booleans,
  ``0o17``, ``0x1F``, ``0777``, ``1_000`` and ``08`` are numbers, ``1e3`` is a number, base-60 forms
  (``10:30``, ``190:20:30.15``) and timestamps (``2024-01-01``) stay strings (`_resolve_plain`);
- numbers end as the JSON kubectl sends: an integer in int64 range stays an `int`, anything else is a
  float64, and a float64 with an integral value below 1e21 is written without a fraction (``3.0`` is
  ``3``; `_json_number`); NaN and infinities are refused (JSON has none);
- mapping keys become strings as sigs.k8s.io/yaml writes them (``NO`` -> ``"false"``, ``9000`` ->
  ``"9000"``, a float key in float32 ``%g`` form); a null key or one above int64 is refused, as there;
- a key given twice in one mapping is refused, also after conversion (``1`` and ``"1"``, ``yes`` and
  ``true``), in YAML and in JSON: kubectl keeps the last one silently, the API server's strict field
  validation refuses it; fleet refuses it with its line;
- ``<<`` merge keys merge in document order as go-yaml v2 does; the one case where that order disagrees
  with the YAML merge rule (explicit keys win), a key written before a ``<<`` that brings the same key,
  is refused rather than read one way or the other;
- JSON manifests follow the same number rules, without NaN or Infinity, and without duplicate keys.

One known difference: a plain scalar with the non-specific tag ``!`` (``! 12``) is text for go-yaml but
reaches fleet as an untagged plain scalar (libyaml reports it so), hence the number 12.

Only plain JSON values come out: tags other than the JSON ones (``!!binary``, ``!!set``, ``!!timestamp``,
custom tags) are refused (`_inspect`, `_construct_document`).

Error messages carry the YAML problem and its line, never a value of the file (a Secret manifest's value
must not reach an error message); a duplicate key is named (keys are field names, not values).
"""

from __future__ import annotations

from fleet.core.yamlsafe.budgets import DEFAULT_LIMITS, LimitExceeded, Limits, MiB, YamlError
from fleet.core.yamlsafe.jsonfiles import load_json
from fleet.core.yamlsafe.yamlfiles import Document, load_yaml

__all__ = [
    "DEFAULT_LIMITS",
    "Document",
    "LimitExceeded",
    "Limits",
    "MiB",
    "YamlError",
    "load_json",
    "load_yaml",
]
