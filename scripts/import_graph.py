#!/usr/bin/env python3
"""cortex-ray's import graph, read from the code (stdlib only; nothing is imported).

    python scripts/import_graph.py            # every arrow between rooms; any circle or arrow up
    python scripts/import_graph.py --modules  # module by module
    python scripts/import_graph.py --dot | dot -Tsvg > imports.svg

Every ``import`` counts: at module level, inside a function, and under ``if TYPE_CHECKING:``
(a type a module names is a part it depends on). A room is a first-level package of
``cortex_ray`` (``serving``, ``cache``...) or a top-level module (``sdk``, ``app``).
``tests/unit/test_architecture.py`` fails on a circle, between modules or between rooms.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "cortex_ray"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

LAYERS: list[tuple[str, ...]] = [
    ("errors", "clock", "net", "identity", "process_log", "task_events"),
    ("rpc",),
    ("spec",),
    ("storage",),
    ("models",),
    ("cache",),
    ("metrics",),
    ("endpoint", "tensorflow"),
    ("protocols",),
    ("reload",),
    ("project",),
    ("ingress",),
    ("deployer",),
    ("cluster",),
    ("compat",),
    ("replica",),
    ("asyncapi",),
    ("application",),
    ("api_handle",),
    ("sdk",),
    ("cortex_ray",),
    ("cli",),
    ("app", "__main__"),
]
"""The rooms, bottom first: a room imports only from rooms in layers below its own
(``docs/architecture.md`` says what each owns). ``cortex_ray`` is the package's ``__init__``."""


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(tree: ast.Module) -> Iterator[tuple[str, list[str], int]]:
    """``(module, names, level)`` of every import statement, wherever it is."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], 0
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", [a.name for a in node.names], node.level


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    known = modules(root)
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for module, names, level in _imports(ast.parse(path.read_text(), str(path))):
            if level:
                base = package.split(".")
                base = base[: len(base) - (level - 1)]
                module = ".".join([*base, module] if module else base)
            if module != PACKAGE and not module.startswith(PACKAGE + "."):
                continue
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
            if len(targets) < len(names) or not names:  # names from the module itself
                targets.append(_existing(module, known))
            edges[name].update(t for t in targets if t != name)
    return edges


def _existing(module: str, known: dict[str, Path]) -> str:
    while module not in known and "." in module:
        module = module.rpartition(".")[0]
    return module


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def rooms(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Room -> the other rooms it imports from."""
    out: dict[str, set[str]] = {}
    for source, targets in edges.items():
        out.setdefault(room(source), set()).update(room(t) for t in targets if room(t) != room(source))
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (each a circle or several), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
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
                groups.append(sorted(group))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for node in sorted(edges):
        if node not in index:
            connect(node)
    return sorted(groups)


def rank() -> dict[str, int]:
    return {r: i for i, layer in enumerate(LAYERS) for r in layer}


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every arrow between rooms that does not point to a lower layer (``a -> b``), and every
    room missing from :data:`LAYERS`."""
    ranks = rank()
    problems = [f"room {r!r} is not placed in LAYERS" for r in sorted(rooms(edges)) if r not in ranks]
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            a, b = room(source), room(target)
            if a != b and a in ranks and b in ranks and ranks[b] >= ranks[a]:
                problems.append(f"{source} -> {target} ({a} may not import {b})")
    return problems


def importers(edges: dict[str, set[str]], module: str) -> list[str]:
    """The package's modules that import ``module``."""
    return sorted(source for source, targets in edges.items() if module in targets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modules", action="store_true", help="module by module, not room by room")
    parser.add_argument("--dot", action="store_true", help="Graphviz instead of text")
    args = parser.parse_args(argv)
    edges = graph()
    shown = edges if args.modules else rooms(edges)
    if args.dot:
        print("digraph cortex_ray {\n  rankdir=TB; node [shape=box, fontname=Helvetica];")
        for source in sorted(shown):
            for target in sorted(shown[source]):
                print(f'  "{source}" -> "{target}";')
        print("}")
    else:
        for source in sorted(shown):
            print(f"{source} -> {', '.join(sorted(shown[source])) or '(nothing)'}")
    found = cycles(shown)
    for group in found:
        print(f"circle: {' <-> '.join(group)}", file=sys.stderr)
    wrong = upward(edges)
    for problem in wrong:
        print(f"arrow up: {problem}", file=sys.stderr)
    return 1 if found or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
