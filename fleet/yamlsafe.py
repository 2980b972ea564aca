"""The limited YAML/JSON loader fleet reads every repository file with, and the limits it enforces.

Owns: `Limits` (the size, count, depth and alias-expansion budgets of a revision, each named in the error
that enforces it), `load_yaml` / `load_json` (bytes -> documents, with the line each document starts on and,
when asked, the line of every field), and `LimitExceeded` / `YamlError`.
Does not: know what a Cluster or a Bundle is (that is `fleet.repository`), read files or git (that is
`fleet.source`).

How an alias bomb is stopped before anything expands it: libyaml's C composer (``yaml.CSafeLoader``) builds
a node graph in which an alias is the *same* node object as its anchor, so "a few hundred bytes that expand
to 10^8 nodes" is a graph of a few dozen nodes. Before the Python constructor turns a document into dicts
and lists, `_inspect` walks that graph once (iteratively, no recursion): it counts the nodes every alias
reference would add if expanded (a memoised subtree size), refuses a document whose expansion passes
`Limits.max_alias_expansion`, refuses self-referencing anchors (a cycle in the graph), measures the nesting
depth against `Limits.max_depth` and rejects tags that are not plain JSON values (``!!binary``, ``!!set``,
custom tags). Only then is the document constructed. Memory stays in proportion to the file size.

Scalars are resolved as YAML 1.1 like Kubernetes does, except that timestamps stay strings (a manifest's
``2024-01-01`` is text, never a `datetime`), so every document is a plain JSON value.

Error messages carry the YAML problem and its line, never a snippet of the file (a Secret manifest's
value must not reach an error message).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
import yaml.constructor
import yaml.nodes
import yaml.resolver

from fleet import errors

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


# ----------------------------------------------------------------------------------------------------------
# Loader: C parser and composer, safe constructor, YAML 1.1 resolution without timestamps.

_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(yaml.CSafeLoader):
    """libyaml's parser and composer, the safe constructor, YAML 1.1 resolution without timestamps."""

    yaml_implicit_resolvers = {  # noqa: RUF012 (read-only table, as in yaml.resolver)
        first: [(tag, regexp) for tag, regexp in rules if tag != _TIMESTAMP]
        for first, rules in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
    }


_ALLOWED_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge", "value")
)


@dataclass(frozen=True)
class Document:
    """One document of a file.

    `index` is its 0-based position among the file's documents (empty ones included), `line` the 1-based
    line where its content starts. With ``lines=True``, `lines` maps a field path (a tuple of keys and list
    indexes, ``("spec", "placement", "cel")``) to the line of its key (of the item, for list entries), and
    `value_lines` maps it to the line where the value's text starts (a block scalar's ``|`` line plus one).
    """

    index: int
    line: int
    data: Any
    lines: Mapping[tuple[str | int, ...], int] = field(default_factory=dict)
    value_lines: Mapping[tuple[str | int, ...], int] = field(default_factory=dict)


def _yaml_message(e: yaml.YAMLError) -> tuple[str, int]:
    """The problem and line of a PyYAML error, without the snippet of the file it would print."""
    if isinstance(e, yaml.MarkedYAMLError):
        parts = [p for p in (e.context, e.problem) if p]
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        return "invalid YAML: " + (", ".join(parts) if parts else "cannot parse"), line
    if isinstance(e, yaml.reader.ReaderError):
        return f"invalid YAML: {e.reason} at byte {e.position}", 1
    return "invalid YAML", 1


def load_yaml(
    data: bytes, *, path: str, limits: Limits = DEFAULT_LIMITS, lines: bool = False
) -> list[Document]:
    """Parse every document of a YAML file, enforcing `limits`. Raises `YamlError` or `LimitExceeded`."""
    if len(data) > limits.max_file_bytes:
        raise LimitExceeded(
            f"file is {len(data)} bytes, over the limit max_file_bytes={limits.max_file_bytes}", path=path
        )
    loader = _Loader(data)
    docs: list[Document] = []
    budget = [limits.max_alias_expansion]
    has_anchors = b"&" in data
    try:
        index = 0
        while loader.check_node():
            if index >= limits.max_documents_per_file:
                raise LimitExceeded(
                    f"more than {limits.max_documents_per_file} documents, over the limit "
                    f"max_documents_per_file={limits.max_documents_per_file}",
                    path=path,
                )
            node = loader.get_node()
            if node is None:
                break
            start = node.start_mark.line + 1
            if has_anchors:  # without an anchor there is no alias; build() checks depth and tags
                _inspect(node, path=path, limits=limits, budget=budget, aliases=True)
            key_lines: dict[tuple[str | int, ...], int] = {}
            value_lines: dict[tuple[str | int, ...], int] = {}
            if lines:
                _collect_lines(node, key_lines, value_lines)
            obj = _construct_document(loader, node, path=path, shared=has_anchors, limits=limits)
            docs.append(Document(index=index, line=start, data=obj, lines=key_lines, value_lines=value_lines))
            index += 1
    except yaml.YAMLError as e:
        message, line = _yaml_message(e)
        if "maximum nesting depth" in message:  # libyaml's own cap (1000 levels), above any sane max_depth
            raise LimitExceeded(
                f"nesting deeper than the limit max_depth={limits.max_depth}", path=path, line=line
            ) from None
        raise YamlError(message, path=path, line=line) from None
    finally:
        loader.dispose()
    return docs


def load_json(data: bytes, *, path: str, limits: Limits = DEFAULT_LIMITS) -> list[Document]:
    """Parse a JSON manifest file (one value, one document), enforcing size and depth limits."""
    if len(data) > limits.max_file_bytes:
        raise LimitExceeded(
            f"file is {len(data)} bytes, over the limit max_file_bytes={limits.max_file_bytes}", path=path
        )
    try:
        obj = json.loads(data)
    except RecursionError:
        raise LimitExceeded(
            f"nesting deeper than the limit max_depth={limits.max_depth}", path=path
        ) from None
    except UnicodeDecodeError as e:
        raise YamlError(f"invalid JSON: not UTF-8 text at byte {e.start}", path=path) from None
    except json.JSONDecodeError as e:
        raise YamlError(f"invalid JSON: {e.msg}", path=path, line=e.lineno) from None
    _json_depth(obj, path=path, limits=limits)
    return [Document(index=0, line=1, data=obj)]


def _json_depth(obj: Any, *, path: str, limits: Limits) -> None:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limits.max_depth:
            raise LimitExceeded(f"nesting deeper than the limit max_depth={limits.max_depth}", path=path)
        stack.extend((c, depth + 1) for c in children)


def _bad_tag(node: yaml.nodes.Node, *, path: str) -> YamlError:
    return YamlError(
        f"unsupported YAML tag {node.tag!r} (only strings, numbers, booleans, null, maps and lists)",
        path=path,
        line=node.start_mark.line + 1,
    )


def _inspect(root: yaml.nodes.Node, *, path: str, limits: Limits, budget: list[int], aliases: bool) -> None:
    """Check one composed document before it is constructed: alias expansion, cycles, depth, tags.

    `budget` holds what is left of the file's alias-expansion budget (shared by its documents). Without
    an ``&`` in the file there can be no anchor, hence no alias: sizes are not tracked then.
    """
    max_depth = limits.max_depth
    # Stack entries: (node, depth, exiting). Post-order so that a node's expanded size is known on exit.
    stack: list[tuple[yaml.nodes.Node, int, bool]] = [(root, 1, False)]
    size: dict[int, int] = {}  # expanded node count of a finished node
    height: dict[int, int] = {}  # nesting levels of collections below and including a finished node
    open_nodes: set[int] = set()
    while stack:
        node, depth, exiting = stack.pop()
        ident = id(node)
        if exiting:
            open_nodes.discard(ident)
            if aliases:
                total, tallest = 1, 0
                children = (
                    [n for kv in node.value for n in kv]
                    if isinstance(node, yaml.nodes.MappingNode)
                    else node.value
                )
                for c in children:
                    total += size[id(c)]
                    tallest = max(tallest, height[id(c)])
                size[ident] = total
                height[ident] = tallest + 1
            continue
        if aliases:
            done = size.get(ident)
            if done is not None:
                budget[0] -= done
                if budget[0] < 0:
                    raise LimitExceeded(
                        f"YAML aliases expand to more than {limits.max_alias_expansion} nodes, over the "
                        f"limit max_alias_expansion={limits.max_alias_expansion}",
                        path=path,
                        line=node.start_mark.line + 1,
                    )
                if depth + height[ident] - 1 > max_depth:  # an alias nests its anchor deeper
                    raise LimitExceeded(
                        f"nesting deeper than the limit max_depth={max_depth}",
                        path=path,
                        line=node.start_mark.line + 1,
                    )
                continue
            if ident in open_nodes:
                raise YamlError(
                    "invalid YAML: an alias refers to its own anchor (recursive structure)",
                    path=path,
                    line=node.start_mark.line + 1,
                )
        if node.tag not in _ALLOWED_TAGS:
            raise _bad_tag(node, path=path)
        if isinstance(node, yaml.nodes.ScalarNode):
            if aliases:
                size[ident] = 1
                height[ident] = 0
            continue
        if depth > max_depth:
            raise LimitExceeded(
                f"nesting deeper than the limit max_depth={max_depth}",
                path=path,
                line=node.start_mark.line + 1,
            )
        if aliases:
            open_nodes.add(ident)
            stack.append((node, depth, True))
        if isinstance(node, yaml.nodes.MappingNode):
            for k, v in node.value:
                stack.append((k, depth + 1, False))
                stack.append((v, depth + 1, False))
        else:
            for c in node.value:
                stack.append((c, depth + 1, False))


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
# A plain ``=`` or ``<<`` used as a value is text (as in Kubernetes' YAML reader), not a YAML 1.1 oddity.
_TEXT = frozenset({_STR, _MERGE, "tag:yaml.org,2002:value"})


class _NeedsMerge(Exception):
    """A ``<<`` merge key: left to PyYAML's constructor, which implements its rules."""


def _construct_document(
    loader: _Loader, root: yaml.nodes.Node, *, path: str, shared: bool, limits: Limits
) -> Any:
    """Build plain Python values from a composed node graph.

    Same result as PyYAML's SafeConstructor for the JSON-like tags allowed, about twice as fast (no
    generators or per-node bookkeeping). It checks depth and tags itself, so a file without anchors needs
    no `_inspect` pass; recursion stops at `Limits.max_depth`. A file with anchors has been through
    `_inspect` (alias budget, cycles) first; its aliased nodes (`shared`) become shared values, as in PyYAML.
    """
    memo: dict[int, Any] | None = {} if shared else None
    max_depth = limits.max_depth
    scalar = {
        "tag:yaml.org,2002:int": loader.construct_yaml_int,
        "tag:yaml.org,2002:float": loader.construct_yaml_float,
        "tag:yaml.org,2002:bool": loader.construct_yaml_bool,
        "tag:yaml.org,2002:null": loader.construct_yaml_null,
    }

    def build(node: yaml.nodes.Node, depth: int) -> Any:
        tag = node.tag
        if isinstance(node, yaml.nodes.ScalarNode):
            if tag in _TEXT:
                return node.value
            convert = scalar.get(tag)
            if convert is None:
                raise _bad_tag(node, path=path)
            return convert(node)
        if depth > max_depth:
            raise LimitExceeded(
                f"nesting deeper than the limit max_depth={max_depth}",
                path=path,
                line=node.start_mark.line + 1,
            )
        if tag not in _ALLOWED_TAGS:
            raise _bad_tag(node, path=path)
        if memo is not None:
            ident = id(node)
            if ident in memo:
                return memo[ident]
        value: Any
        if isinstance(node, yaml.nodes.SequenceNode):
            value = [build(c, depth + 1) for c in node.value]
        else:
            value = {}
            for k, v in node.value:
                if k.tag == _MERGE:
                    raise _NeedsMerge
                key = build(k, depth + 1)
                if isinstance(key, list | dict):
                    raise YamlError(
                        "invalid YAML: a mapping key must be a scalar, not a list or mapping",
                        path=path,
                        line=k.start_mark.line + 1,
                    )
                value[key] = build(v, depth + 1)
        if memo is not None:
            memo[id(node)] = value
        return value

    try:
        return build(root, 1)
    except _NeedsMerge:
        _inspect(root, path=path, limits=limits, budget=[0], aliases=False)
        return loader.construct_document(root)


def _collect_lines(
    root: yaml.nodes.Node,
    key_lines: dict[tuple[str | int, ...], int],
    value_lines: dict[tuple[str | int, ...], int],
) -> None:
    """Record the line of every field of a small document (cluster files, bundle.yaml)."""
    stack: list[tuple[yaml.nodes.Node, tuple[str | int, ...]]] = [(root, ())]
    seen: set[int] = set()
    while stack:
        node, prefix = stack.pop()
        if id(node) in seen:  # an alias: its lines are those of its anchor
            continue
        seen.add(id(node))
        if isinstance(node, yaml.nodes.MappingNode):
            for k, v in node.value:
                if not isinstance(k, yaml.nodes.ScalarNode):
                    continue
                sub = (*prefix, str(k.value))
                key_lines.setdefault(sub, k.start_mark.line + 1)
                value_lines.setdefault(sub, _value_line(v))
                stack.append((v, sub))
        elif isinstance(node, yaml.nodes.SequenceNode):
            for i, c in enumerate(node.value):
                sub = (*prefix, i)
                key_lines.setdefault(sub, c.start_mark.line + 1)
                value_lines.setdefault(sub, _value_line(c))
                stack.append((c, sub))


def _value_line(node: yaml.nodes.Node) -> int:
    line = int(node.start_mark.line) + 1
    if isinstance(node, yaml.nodes.ScalarNode) and node.style in ("|", ">"):
        line += 1
    return line
