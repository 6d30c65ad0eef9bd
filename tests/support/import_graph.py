"""The import graph of sessionctl and sessiond, read from the source (no module is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import ROOT

PACKAGES = (ROOT / "client" / "sessionctl", ROOT / "daemon" / "sessiond")


def module_paths() -> dict[str, Path]:
    """Each module's dotted name and its file."""
    names = {}
    for top in PACKAGES:
        for path in top.rglob("*.py"):
            parts = (top.name, *path.relative_to(top).with_suffix("").parts)
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def module_imports() -> dict[str, set[str]]:
    """Each module and the modules of ours it imports, lazy imports included.

    `from pkg import name` counts as importing `pkg.name` when that is a module and `pkg`
    otherwise; `import pkg.mod` runs `pkg/__init__.py` too, so the packages above an imported
    module count as imported, except the importer's own packages (already running by then)."""
    names = module_paths()
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                subs = {f"{base}.{alias.name}" for alias in node.names}
                found |= {sub for sub in subs if sub in names} or {base}
                if any(sub not in names for sub in subs):
                    found.add(base)
        with_parents = set(found)
        for target in found:
            parts = target.split(".")
            with_parents |= {".".join(parts[:i]) for i in range(1, len(parts))}
        graph[name] = {
            target
            for target in with_parents
            if target in names and target != name and not name.startswith(target + ".")
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found
