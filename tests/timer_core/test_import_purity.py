from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ["app", "fastapi", "starlette", "sqlmodel", "sqlalchemy", "jinja2", "prometheus_client"]
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
        f"print(json.dumps([names, [m for m in {FORBIDDEN!r} if m in sys.modules]]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    imported, forbidden = json.loads(result.stdout)
    assert forbidden == []
    packages = ["timer_core.engine", "timer_core.sources", "timer_core.diagnosis"]
    assert set(TORCH_MODULES + packages) <= set(imported)
    assert {"timer_core.engine.reaper", "timer_core.diagnosis.stack_capture"} <= set(imported)
