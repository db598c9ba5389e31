"""The house's stairs go one way: no import circles, no arrow up, entry points nothing imports.

The graph is read from the code by ``scripts/import_graph.py`` (every import, at module level,
inside functions and under ``TYPE_CHECKING``); ``docs/architecture.md`` draws it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "import_graph.py"


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def edges(tool: ModuleType) -> dict[str, set[str]]:
    found: dict[str, set[str]] = tool.graph()
    return found


def test_no_module_imports_itself_back(tool: ModuleType, edges: dict[str, set[str]]) -> None:
    assert tool.cycles(edges) == []


def test_no_room_imports_itself_back(tool: ModuleType, edges: dict[str, set[str]]) -> None:
    assert tool.cycles(tool.rooms(edges)) == []


def test_every_arrow_points_down_the_layers(tool: ModuleType, edges: dict[str, set[str]]) -> None:
    assert tool.upward(edges) == []


def test_entry_points_are_imported_by_nothing_of_the_package(
    tool: ModuleType, edges: dict[str, set[str]]
) -> None:
    assert tool.importers(edges, "cortex_ray.app") == []  # Serve's import path
    assert tool.importers(edges, "cortex_ray.__main__") == []
    outside_cli = [
        m for m in tool.importers(edges, "cortex_ray.cli.main") if not m.startswith("cortex_ray.cli")
    ]
    assert outside_cli == ["cortex_ray.__main__"]


def test_the_replica_side_never_reaches_the_deployer_entry_points(
    tool: ModuleType, edges: dict[str, set[str]]
) -> None:
    """What runs in a replica (its runtime, the request path, the AsyncAPI, live reloading, the
    cache) never imports the SDK, the application builder or the CLI, even lazily."""
    reached = _reachable(edges, [m for m in edges if tool.room(m) in ("replica", "asyncapi")])
    assert not {m for m in reached if tool.room(m) in ("sdk", "application", "cli", "app")}


def test_the_tool_finds_a_circle_and_an_arrow_up(tool: ModuleType) -> None:
    """The checks above can fail: a made-up graph with a circle and an arrow up is caught."""
    made_up = {
        "cortex_ray.cache.a": {"cortex_ray.cache.b"},
        "cortex_ray.cache.b": {"cortex_ray.cache.a", "cortex_ray.sdk"},
        "cortex_ray.sdk": set(),
    }
    assert tool.cycles(made_up) == [["cortex_ray.cache.a", "cortex_ray.cache.b"]]
    assert tool.upward(made_up) == ["cortex_ray.cache.b -> cortex_ray.sdk (cache may not import sdk)"]
    assert tool.upward({"cortex_ray.attic.x": set()}) == ["room 'attic' is not placed in LAYERS"]


def _reachable(edges: dict[str, set[str]], starts: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        for target in edges.get(node, ()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen
