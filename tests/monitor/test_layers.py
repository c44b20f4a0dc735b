"""The dependency rule of the code base, checked on every import (function-local ones too):

    monitor.cli -> chaos, dashboards -> monitor.local -> monitor.app -> monitor.pipeline
      -> monitor.acting -> monitor.telemetry -> monitor.config -> monitor.types
      -> consumers, detectors

An import may point down this list or stay in its own room, never up; the packages that
share a rung (chaos and dashboards, consumers and detectors) never import each other;
chaos and dashboards use only monitor.local, monitor.telemetry and monitor.app; and no two
modules import each other, however indirectly.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("monitor", "consumers", "detectors", "chaos", "dashboards")
LAYERS: tuple[tuple[str, ...], ...] = (
    ("monitor.cli",),
    ("chaos", "dashboards"),
    ("monitor.local",),
    ("monitor.app",),
    ("monitor.pipeline",),
    ("monitor.acting",),
    ("monitor.telemetry",),
    ("monitor.config",),
    ("monitor.types", "monitor"),  # the top package: a docstring and __all__ only
    ("consumers", "detectors"),
)
TOOLS_MAY_USE = ("monitor.local", "monitor.telemetry", "monitor.app")
Edges = dict[str, set[str]]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def import_graph() -> Edges:
    """Module -> the modules of ours it imports (`from pkg import mod` counts as pkg.mod)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
             if "tests" not in p.relative_to(ROOT).parts}
    graph: Edges = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in files else node.module)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def layer_of(module: str) -> tuple[int, str]:
    """(rung, room) of a module: its longest matching prefix in LAYERS."""
    best: tuple[int, str] | None = None
    for rung, rooms in enumerate(LAYERS):
        for room in rooms:
            if (module == room or module.startswith(room + ".")) and \
                    (best is None or len(room) > len(best[1])):
                best = (rung, room)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add its room to LAYERS")
    return best


def violations(graph: Edges) -> list[str]:
    found = []
    for source, targets in sorted(graph.items()):
        rung, room = layer_of(source)
        for target in sorted(targets):
            t_rung, t_room = layer_of(target)
            if t_rung < rung:
                found.append(f"{source} -> {target}: {t_room} is above {room}")
            elif t_rung == rung and t_room != room and "monitor" not in (room, t_room):
                found.append(f"{source} -> {target}: {room} and {t_room} never import "
                             "each other")
            elif room in ("chaos", "dashboards") and t_room.startswith("monitor") \
                    and t_room not in TOOLS_MAY_USE:
                found.append(f"{source} -> {target}: {room} uses only {TOOLS_MAY_USE}")
    return found


def cycles(graph: Edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _with(graph: Edges, edges: Iterable[tuple[str, str]]) -> Edges:
    out = {k: set(v) for k, v in graph.items()}
    for a, b in edges:
        out.setdefault(a, set()).add(b)
    return out


def test_every_import_points_down_and_none_forms_a_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 100  # the walk saw the code base
    assert "monitor.pipeline.drift" in graph["monitor.pipeline.stages"]
    assert violations(graph) == []
    assert cycles(graph) == []


@pytest.mark.parametrize(("edge", "why"), [
    (("monitor.types", "monitor.pipeline.drift"), "monitor.pipeline is above monitor.types"),
    (("monitor.config.load", "monitor.acting.rules"), "monitor.acting is above monitor.config"),
    (("monitor.acting.rules", "monitor.pipeline.drift"),
     "monitor.pipeline is above monitor.acting"),
    (("consumers.source", "detectors.embedder"), "consumers and detectors never import"),
    (("chaos.scenarios", "monitor.pipeline.drift"), "chaos uses only"),
    (("monitor.local.demo", "chaos.parts"), "chaos is above monitor.local"),
])
def test_an_arrow_that_points_up_is_caught(edge: tuple[str, str], why: str) -> None:
    [found] = violations(_with(import_graph(), [edge]))
    assert found.startswith(f"{edge[0]} -> {edge[1]}") and why in found


def test_a_cycle_is_caught_even_within_one_room() -> None:
    graph = _with(import_graph(), [("monitor.acting.webhook", "monitor.acting.delivery")])
    assert cycles(graph) == [["monitor.acting.delivery", "monitor.acting.webhook"]]
