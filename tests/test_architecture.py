"""The rooms hold: file sizes, no import cycles, the kernel never reaches up into the console.

Read from the source (ast), so a function-level import counts as much as one at the top.
docs/architecture.md describes the rooms these checks keep apart.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("kernel", "trading", "foresight_site", "strategies", "bench", "tests")
MAX_LINES = 600
KERNEL_CLASS_MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            # Hidden folders are not the project's code (a benchmark's peer venv, bench/.peer-venv).
            if "migrations" in path.parts or any(part.startswith(".") for part in path.relative_to(REPO).parts):
                continue
            modules[_module_name(path)] = path
    return modules


MODULES = _project_modules()


def _resolve(name: str) -> str | None:
    """The deepest project module that `name` (a dotted import target) names or lies in."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> set[str]:
    """Every project module `module` imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import name`: name may itself be a module of pkg.
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            targets.append(base)
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path):
    # The graph is read from real files: check it on one we know.
    assert "kernel.protocol" in GRAPH["kernel.control"] or "kernel.protocol" in GRAPH["kernel.kernel"]
    assert all(dep in MODULES for deps in GRAPH.values() for dep in deps)


def test_no_import_cycle_among_the_projects_modules():
    cycles = _cycles(GRAPH)
    assert cycles == [], "import cycles (function-level imports count): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_the_kernel_imports_nothing_of_the_console():
    allowed_django = {"kernel.apps", "kernel.management.commands.runkernel"}
    offenders = []
    for name, path in MODULES.items():
        if not name.startswith("kernel"):
            continue
        for dep in GRAPH[name]:
            if dep.split(".")[0] in ("trading", "foresight_site"):
                offenders.append(f"{name} imports {dep}")
        if name not in allowed_django:
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                offenders += [f"{name} imports {m}" for m in mods if m.split(".")[0] in ("django", "ninja", "celery")]
    assert offenders == []


def test_strategies_import_only_the_strategy_api():
    offenders = []
    for name, path in MODULES.items():
        if not name.startswith("strategies"):
            continue
        for dep in GRAPH[name]:
            if not (dep.startswith("strategies") or dep == "kernel.strategy_api"):
                offenders.append(f"{name} imports {dep}")
    assert offenders == []


def _sized_files() -> list[Path]:
    return [p for name, p in MODULES.items() if name.split(".")[0] in ("kernel", "trading", "foresight_site")]


@pytest.mark.parametrize("path", _sized_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_file_over_the_limit(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines (limit {MAX_LINES}): split it by concern"


def test_the_kernel_class_is_a_composition_root():
    tree = ast.parse((REPO / "kernel" / "kernel.py").read_text())
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Kernel"]
    assert len(classes) == 1
    size = classes[0].end_lineno - classes[0].lineno + 1
    assert size < KERNEL_CLASS_MAX_LINES, f"Kernel is {size} lines: move a job into its own room"
