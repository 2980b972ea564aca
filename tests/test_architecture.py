"""The architecture as a test: no import cycle between fleet's modules, no module over 800 lines.

The layers themselves (cli > controller > cluster > clients > core, the simulator apart) are import-linter
contracts in pyproject.toml (`lint-imports`, part of `make test`); this adds what a contract cannot say.
Imports inside functions count like any other (grimp reads every import statement of a module), and so
would an `importlib.import_module("fleet....")` that hides one: there is none (checked below).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import grimp

import fleet

PACKAGE = Path(fleet.__file__).resolve().parent
MAX_LINES = 800


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph.modules:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_module_of_fleet_is_part_of_an_import_cycle_lazy_imports_included() -> None:
    graph = grimp.build_graph("fleet", cache_dir=None)
    cycles = _cycles(graph)
    assert not cycles, "import cycles (each line: the modules of one):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_finder_finds_a_cycle_it_is_given() -> None:
    graph = grimp.ImportGraph()
    for m in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(m)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph) == [["a.x", "a.y"]]


def test_no_module_of_fleet_is_over_800_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_no_module_of_fleet_imports_another_by_name_at_run_time() -> None:
    hidden = []
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
                in ("import_module", "__import__")
            ):
                hidden.append(f"{p.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not hidden, f"imports the import graph cannot see: {hidden}"


def test_the_map_in_fleet_init_names_every_module_of_each_layer_in_its_layer() -> None:
    """fleet/__init__.py draws the tree (a newcomer's first stop): a module missing from it is a module
    nobody finds. Each layer's paragraph starts with the layer's name at the start of a line."""
    doc = fleet.__doc__ or ""
    layers = ("cli", "controller", "cluster", "clients", "core")
    lines = doc.splitlines()
    starts = {
        name: next(i for i, line in enumerate(lines) if line.strip().split(" ", 1)[0] == name)
        for name in layers
    }
    missing = {}
    for name in layers:
        begin = starts[name]
        end = begin + 1  # the paragraph runs to the next layer or a blank line
        while end < len(lines) and lines[end].strip() and end not in starts.values():
            end += 1
        text = " ".join(lines[begin:end])
        words = set(re.findall(r"[a-z_]+", text))
        modules = sorted(
            p.stem if p.is_file() else p.name
            for p in (PACKAGE / name).iterdir()
            if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
            or (p.is_dir() and (p / "__init__.py").exists())
        )
        absent = [m for m in modules if m not in words]
        if absent:
            missing[name] = absent
    assert not missing, f"modules fleet/__init__.py does not name in their layer: {missing}"


def _resolves(name: str, modules: dict[str, list[object]], classes: dict[str, list[type]]) -> bool:
    """`name` (``fleet.a.b.f``, ``b.f``, ``Class.method``, ``b.Class.attr``) names something in fleet."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        starts: list[object] = [*modules.get(head, []), *(classes.get(head, []) if cut == 1 else [])]
        for start in starts:
            obj = start
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                continue
            return True
        if starts:
            return False
    return False


def test_every_function_docs_architecture_md_names_exists_in_fleet() -> None:
    """docs/architecture.md follows one commit through named functions: each `dotted.name` it cites must
    be found in the code (by full path, by a module's last names, or by class), so a rename cannot leave
    the walk-through pointing at nothing."""
    modules: dict[str, list[object]] = {}
    classes: dict[str, list[type]] = {}
    for info in pkgutil.walk_packages(fleet.__path__, "fleet."):
        if info.name.endswith("__main__") or info.name.startswith(
            "fleet.sim"
        ):  # the walk never enters the sim
            continue
        module = importlib.import_module(info.name)
        segments = info.name.split(".")
        for i in range(len(segments)):
            modules.setdefault(".".join(segments[i:]), []).append(module)
        for value in vars(module).values():
            if inspect.isclass(value) and value.__module__.startswith("fleet."):
                classes.setdefault(value.__name__, []).append(value)
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    files = ("md", "py", "toml", "yaml", "json")  # `pyproject.toml` is a file, not a name
    names = {
        n
        for n in re.findall(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(\))?`", text)
        if n.rsplit(".", 1)[1] not in files
    }
    assert len(names) > 40  # the walk-through and the pipeline are there
    missing = sorted(n for n in names if not _resolves(n, modules, classes))
    assert not missing, f"docs/architecture.md names what fleet does not have: {missing}"
