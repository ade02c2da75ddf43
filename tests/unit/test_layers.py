"""The architecture holds: layers import downwards only, no module imports itself round a circle, no module grows
past 400 lines, and the uploader stands on its own (the client and the pure domain, nothing of the server).

Layers, lowest first (README, Architecture):
    0  app.domain           the contract, rules, lifecycle, errors, reasons, clock: no I/O
    1  app.settings         one typed object, grouped by concern
    2  app.state, app.storage    Redis (keys, scripts, snapshots) and S3 (adapter, presigner); never each other
    3  app.uploads, app.upkeep, app.webhooks   the steps of an upload (both halves), the periodic sweeps, webhooks
    4  app.http, app.admin, worker    what runs: the API, the admin CLI, the arq workers
The uploader (app.client) may import itself and app.domain only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400
LAYERS = {
    "app.domain": 0,
    "app.settings": 1,
    "app.state": 2,
    "app.storage": 2,
    "app.uploads": 3,
    "app.upkeep": 3,
    "app.webhooks": 3,
    "app.http": 4,
    "app.launch": 4,
    "app.admin": 4,
    "worker": 4,
}
SIDEWAYS_FORBIDDEN = {("app.state", "app.storage"), ("app.storage", "app.state"), ("app.upkeep", "app.uploads"),
                      ("app.webhooks", "app.uploads"), ("app.uploads", "app.webhooks")}  # fmt: skip
"""Same-layer packages that stay apart: Redis and S3 know nothing of each other, upkeep uses no step, and webhooks
and the steps know nothing of each other (the steps' scripts record events; webhooks read them from the outbox)."""


def modules() -> dict[str, Path]:
    """Every module of app/ and worker/ by its dotted name."""
    found = {}
    for path in sorted([*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("worker").rglob("*.py")]):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The app./worker. modules a file imports, anywhere in it (TYPE_CHECKING and function-local imports too).

    `from app.state import keys` imports the module app.state.keys; `from app.state import UploadState` imports
    what the package app.state exports.
    """
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]  # fmt: skip
        else:
            continue
        yield from (n for n in names if n.split(".")[0] in ("app", "worker"))


def package(module: str) -> str:
    """The layer package a module belongs to ('app.client' for the uploader)."""
    if module.startswith("app.client"):
        return "app.client"
    for name in sorted(LAYERS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in {__file__}")


def graph() -> dict[str, set[str]]:
    """module -> the modules of app/ and worker/ it imports."""
    known = modules()
    return {name: {m for m in imports(path, known) if m in known and m != name} for name, path in known.items()}


def test_layers_import_downwards_only() -> None:
    wrong = []
    for module, targets in graph().items():
        if module == "app":
            continue
        here = package(module)
        for target in targets:
            there = package(target)
            if here == "app.client":
                if there not in ("app.client", "app.domain"):
                    wrong.append(f"{module} -> {target} (the uploader imports app.client and app.domain only)")
            elif there == "app.client":
                wrong.append(f"{module} -> {target} (the server does not use the uploader)")
            elif LAYERS[there] > LAYERS[here]:
                wrong.append(f"{module} (layer {LAYERS[here]}) -> {target} (layer {LAYERS[there]})")
            elif (here, there) in SIDEWAYS_FORBIDDEN:
                wrong.append(f"{module} -> {target} ({here} and {there} stay apart)")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not circles, circles


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_small(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: one concept per module"


def test_every_package_is_placed() -> None:
    for name in modules():
        if name != "app":  # the namespace's own (empty) __init__
            package(name)


def test_the_readme_lists_every_module() -> None:
    """The README's module table (Architecture) names every module, so the map cannot drift from the code."""
    readme = (ROOT / "README.md").read_text()
    paths = [p.relative_to(ROOT).as_posix() for p in modules().values() if p.name != "__init__.py"]
    assert not [p for p in paths if f"`{p}`" not in readme]
