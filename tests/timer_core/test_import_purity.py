from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import timer_core

FORBIDDEN = ["app", "fastapi", "starlette", "sqlmodel", "sqlalchemy", "jinja2", "prometheus_client"]
# An optional extra: loaded only when asked for (``configure(..., worker_server=True)``).
OPTIONAL = ["torch"]
# Torch's module names, which users import: they must stay where torch has them.
TORCH_MODULES = ["timer_core.api", "timer_core.local_timer", "timer_core.file_based_local_timer"]


def test_importing_timer_core_loads_no_web_or_db_package() -> None:
    # Every module of the library, its subpackages included, found by walking the
    # package: a module added later is checked without editing this test.
    code = (
        "import importlib, json, pkgutil, sys, timer_core\n"
        "names = [m.name for m in pkgutil.walk_packages(timer_core.__path__, 'timer_core.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps([names, [m for m in {FORBIDDEN + OPTIONAL!r} if m in sys.modules]]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    imported, forbidden = json.loads(result.stdout)
    assert forbidden == []
    packages = ["timer_core.engine", "timer_core.sources", "timer_core.diagnosis"]
    assert set(TORCH_MODULES + packages) <= set(imported)
    assert {"timer_core.engine.reaper", "timer_core.diagnosis.stack_capture"} <= set(imported)


# What each subpackage may import of the rest of timer_core: the engine builds on
# nothing but the table of logger names, and the sources and diagnosis only on it (and
# the sources on the codec). ``safe_dirs`` (making directories by descriptor) and
# ``log_names`` (docs/logging.md) use the standard library alone; both the FIFOs and
# the stack dump directories make their directories with ``safe_dirs``.
LAYERS = {
    "engine": {"log_names"},
    "sources": {"engine", "wire", "safe_dirs", "log_names"},
    "diagnosis": {"engine", "safe_dirs", "log_names"},
}


def imported_parts(path: Path) -> Iterator[str]:
    """The parts of timer_core (``engine``, ``wire``, ...) a module of a subpackage
    imports; a relative import within its own subpackage is none."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.ImportFrom) and node.level == 2:  # from timer_core/<sub>/
            base = f"timer_core.{node.module}" if node.module else "timer_core"
            names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "timer_core":
                yield parts[1] if len(parts) > 1 else "timer_core"


def test_each_subpackage_imports_only_the_layers_below_it() -> None:
    root = Path(timer_core.__file__).parent
    for package, allowed in LAYERS.items():
        for path in sorted((root / package).glob("*.py")):
            for part in imported_parts(path):
                assert part in allowed | {package}, f"{package}/{path.name} imports {part}"
