"""The service's rooms import only downwards, and only the composition root and the
request dependency know the running ``Service``.

A room is a subpackage of ``app`` (``access``, ``db``, ``notify``, ``ops``, ``web``) or one module
at its top (``main``, ``service``, ``deps``, ``settings``, ...). The rooms and their
imports are read from the source, so a module added later is checked without editing
this test.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import app

APP = Path(app.__file__).parent
# Who may import ``app.service``: the composition root builds it, the request
# dependency hands it to routes; everything else takes the narrow piece it needs.
KNOWS_SERVICE = {"app/main.py", "app/service.py", "app/deps.py"}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(APP.rglob("*.py")):
        relative = path.relative_to(APP)
        if relative.parts[0] == "migrations" or "migrations" in relative.parts:
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(["app", *parts]), path


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every ``app.*`` module name this module imports, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # ``from app.db import store`` names a module; ``from app.db.store import X``
            # names a module and something in it: both are imports of the module.
            names = [stem, *(f"{stem}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (name for name in names if name == "app" or name.startswith("app."))


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "app"


def _room_arrows() -> dict[str, dict[str, str]]:
    """room -> {room it imports: one module that does it, for the message}."""
    known = {name for name, _ in _modules()}
    arrows: dict[str, dict[str, str]] = {}
    for module, path in _modules():
        for name in _imports(module, path):
            while name not in known and "." in name:
                name = name.rpartition(".")[0]
            if name in known and name != "app":
                source, target = _room(module), _room(name)
                if source != target:
                    arrows.setdefault(source, {}).setdefault(target, f"{module} -> {name}")
    return arrows


def _cycle(arrows: dict[str, dict[str, str]]) -> list[str] | None:
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(room: str) -> list[str] | None:
        state[room] = "open"
        trail.append(room)
        for target in arrows.get(room, {}):
            if state.get(target) == "open":
                return [*trail[trail.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        state[room] = "done"
        trail.pop()
        return None

    for room in sorted(arrows):
        if room not in state and (found := visit(room)):
            return found
    return None


def test_no_room_imports_a_room_that_imports_it_back() -> None:
    arrows = _room_arrows()
    cycle = _cycle(arrows)
    if cycle:
        steps = [arrows[a][b] for a, b in itertools.pairwise(cycle)]
        raise AssertionError("rooms import each other in a loop: " + "; ".join(steps))


def test_only_the_composition_root_and_the_request_dependency_import_service() -> None:
    importers = {
        str(path.relative_to(APP.parent))
        for module, path in _modules()
        if any(name.startswith("app.service") for name in _imports(module, path))
    }
    assert importers <= KNOWS_SERVICE, sorted(importers - KNOWS_SERVICE)


def test_the_rules_see_the_imports_they_check() -> None:
    # A reader that found no imports would pass both tests above: it must find these.
    arrows = _room_arrows()
    assert "db" in arrows.get("web", {}), arrows
    assert any("app.service" in name for name in _imports("app.deps", APP / "deps.py"))


def test_notifications_sit_between_the_database_and_the_pages() -> None:
    # The recorder (db) writes the outbox through a hook it is handed, never by
    # importing it; notify reads the database and is read by the pages, never the
    # other way round, and knows nothing of HTTP routes.
    arrows = _room_arrows()
    assert "notify" not in arrows.get("db", {}), arrows["db"]
    assert "web" not in arrows.get("notify", {}), arrows.get("notify")
    assert "db" in arrows.get("notify", {}) and "notify" in arrows.get("web", {})
