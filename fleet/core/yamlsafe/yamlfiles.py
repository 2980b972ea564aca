"""`load_yaml`: bytes -> documents, as Kubernetes reads them, under the limits.

Owns: the alias-bomb inspection of the node graph before anything is constructed (`inspect`), the
construction of plain JSON values (go-yaml v2's merge keys, duplicate keys refused, keys as
sigs.k8s.io/yaml writes them), and the line of each document and, when asked, of every field.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
import yaml.nodes

from fleet.core.yamlsafe import budgets, scalars


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
    data: bytes, *, path: str, limits: budgets.Limits = budgets.DEFAULT_LIMITS, lines: bool = False
) -> list[Document]:
    """Parse every document of a YAML file, enforcing `limits`. Raises `YamlError` or `LimitExceeded`."""
    if len(data) > limits.max_file_bytes:
        raise budgets.LimitExceeded(
            f"file is {len(data)} bytes, over the limit max_file_bytes={limits.max_file_bytes}", path=path
        )
    loader = scalars.Loader(data)
    docs: list[Document] = []
    budget = [limits.max_alias_expansion]
    has_anchors = b"&" in data
    try:
        index = 0
        while loader.check_node():
            if index >= limits.max_documents_per_file:
                raise budgets.LimitExceeded(
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
                _collect_lines(node, key_lines, value_lines, path=path)
            obj = _construct_document(node, path=path, shared=has_anchors, limits=limits)
            docs.append(Document(index=index, line=start, data=obj, lines=key_lines, value_lines=value_lines))
            index += 1
    except yaml.YAMLError as e:
        message, line = _yaml_message(e)
        if "maximum nesting depth" in message:  # libyaml's own cap (1000 levels), above any sane max_depth
            raise budgets.LimitExceeded(
                f"nesting deeper than the limit max_depth={limits.max_depth}", path=path, line=line
            ) from None
        raise budgets.YamlError(message, path=path, line=line) from None
    finally:
        loader.dispose()
    return docs


def _inspect(
    root: yaml.nodes.Node, *, path: str, limits: budgets.Limits, budget: list[int], aliases: bool
) -> None:
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
                    raise budgets.LimitExceeded(
                        f"YAML aliases expand to more than {limits.max_alias_expansion} nodes, over the "
                        f"limit max_alias_expansion={limits.max_alias_expansion}",
                        path=path,
                        line=node.start_mark.line + 1,
                    )
                if depth + height[ident] - 1 > max_depth:  # an alias nests its anchor deeper
                    raise budgets.LimitExceeded(
                        f"nesting deeper than the limit max_depth={max_depth}",
                        path=path,
                        line=node.start_mark.line + 1,
                    )
                continue
            if ident in open_nodes:
                raise budgets.YamlError(
                    "invalid YAML: an alias refers to its own anchor (recursive structure)",
                    path=path,
                    line=node.start_mark.line + 1,
                )
        if node.tag not in scalars.ALLOWED_TAGS:
            raise scalars.bad_tag(node, path=path)
        if isinstance(node, yaml.nodes.ScalarNode):
            if aliases:
                size[ident] = 1
                height[ident] = 0
            continue
        if depth > max_depth:
            raise budgets.LimitExceeded(
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


def shown_key(key: str) -> str:
    text = json.dumps(key, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + '..."'


def _is_merge_key(node: yaml.nodes.Node) -> bool:
    """``<<`` as a plain key (or tagged ``!!merge``), as go-yaml v2 recognises a merge key."""
    return (
        node.value == "<<"
        and isinstance(node, yaml.nodes.ScalarNode)
        and node.tag in (scalars.PLAIN, scalars.MERGE)
    )


def _construct_document(root: yaml.nodes.Node, *, path: str, shared: bool, limits: budgets.Limits) -> Any:
    """Build plain JSON values from a composed node graph, reading scalars, keys, duplicates and merges
    as Kubernetes does (see the module docstring).

    It checks depth and tags itself, so a file without anchors needs no `_inspect` pass; recursion stops at
    `Limits.max_depth`. A file with anchors has been through `_inspect` (alias budget, cycles) first; its
    aliased nodes (`shared`) become shared values, as in PyYAML.
    """
    memo: dict[int, Any] | None = {} if shared else None
    max_depth = limits.max_depth
    scalar_node = yaml.nodes.ScalarNode
    sequence_node = yaml.nodes.SequenceNode
    mapping_node = yaml.nodes.MappingNode

    def scalar(node: yaml.nodes.ScalarNode) -> Any:
        tag = node.tag
        if tag == scalars.PLAIN:
            raw = scalars.resolve_plain(node.value)
        elif tag == scalars.STR:
            return node.value
        else:
            raw = scalars.resolve_tagged(node, path=path)
        kind = type(raw)
        if kind is str or kind is bool or raw is None:
            return raw
        try:
            return scalars.json_number(raw)
        except ValueError:
            raise budgets.YamlError(
                "invalid YAML: .nan and .inf are not JSON numbers (Kubernetes refuses them; quote them for "
                "text)",
                path=path,
                line=node.start_mark.line + 1,
            ) from None

    def duplicate(node: yaml.nodes.Node, key_node: yaml.nodes.Node, key: str) -> budgets.YamlError:
        first = next(
            k for k, _ in node.value if not _is_merge_key(k) and scalars.scalar_key(k, path=path) == key
        )
        first_line = first.start_mark.line + 1
        if first.value == key_node.value:
            why = f"duplicate key {shown_key(key)} (first at line {first_line})"
        else:
            why = (
                f"duplicate key {shown_key(key)}: {shown_key(str(first.value))} at line {first_line} and "
                f"{shown_key(str(key_node.value))} "
                "here are the same key as Kubernetes reads them"
            )
        return budgets.YamlError("invalid YAML: " + why, path=path, line=key_node.start_mark.line + 1)

    def merge(
        value: dict[str, Any], merged: set[str], key_node: yaml.nodes.Node, node: yaml.nodes.Node, depth: int
    ) -> None:
        """Apply one ``<<`` in go-yaml v2's order: its mappings' keys overwrite what came before, the first
        mapping of a list winning; a key set explicitly before the ``<<`` is refused (see the docstring)."""
        line = key_node.start_mark.line + 1
        if isinstance(node, mapping_node):
            sources = [node]
        elif isinstance(node, sequence_node) and all(isinstance(c, mapping_node) for c in node.value):
            sources = node.value[::-1]
        else:
            raise budgets.YamlError(
                "invalid YAML: a << merge needs a mapping or a list of mappings", path=path, line=line
            )
        for source in sources:
            for key, item in build(source, depth).items():
                if key in value and key not in merged:
                    raise budgets.YamlError(
                        f"invalid YAML: key {shown_key(key)} is set before this << merge, which sets it "
                        "again: Kubernetes keeps the merged value, the YAML merge rule the explicit one "
                        "(write << first, or drop one of them)",
                        path=path,
                        line=line,
                    )
                value[key] = item
                merged.add(key)

    def build(node: yaml.nodes.Node, depth: int) -> Any:
        if isinstance(node, scalar_node):
            return scalar(node)
        if depth > max_depth:
            raise budgets.LimitExceeded(
                f"nesting deeper than the limit max_depth={max_depth}",
                path=path,
                line=node.start_mark.line + 1,
            )
        if node.tag not in scalars.ALLOWED_TAGS:
            raise scalars.bad_tag(node, path=path)
        if memo is not None:
            ident = id(node)
            if ident in memo:
                return memo[ident]
        value: Any
        if isinstance(node, sequence_node):
            value = [build(c, depth + 1) for c in node.value]
        else:
            value = {}
            merged: set[str] | None = None  # keys a << brought, not set explicitly since
            merge_node: yaml.nodes.Node | None = None
            for k, v in node.value:
                if _is_merge_key(k):
                    if merge_node is not None:
                        raise budgets.YamlError(
                            f'invalid YAML: duplicate key "<<" (first at line {merge_node.start_mark.line + 1}; '
                            "merge several mappings with << : [*a, *b])",
                            path=path,
                            line=k.start_mark.line + 1,
                        )
                    merge_node = k
                    merged = set()
                    merge(value, merged, k, v, depth + 1)
                    continue
                key = scalars.scalar_key(k, path=path)
                if key in value:
                    if merged is None or key not in merged:
                        raise duplicate(node, k, key)
                    merged.discard(key)
                value[key] = build(v, depth + 1)
        if memo is not None:
            memo[id(node)] = value
        return value

    return build(root, 1)


def _collect_lines(
    root: yaml.nodes.Node,
    key_lines: dict[tuple[str | int, ...], int],
    value_lines: dict[tuple[str | int, ...], int],
    *,
    path: str,
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
                sub = (*prefix, scalars.scalar_key(k, path=path))
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
