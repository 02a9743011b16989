from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ["app", "fastapi", "starlette", "sqlmodel", "sqlalchemy", "jinja2", "prometheus_client"]


def test_importing_timer_core_loads_no_web_or_db_package() -> None:
    code = (
        "import sys, timer_core, timer_core.api, timer_core.local_timer, "
        "timer_core.file_based_local_timer\n"
        f"print([m for m in {FORBIDDEN!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
