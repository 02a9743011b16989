"""Logger names are an operator contract (docs/logging.md): every module takes its
logger's name from its package's table, every name in a table is used and shown on
the page, and the page shows no other."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import app
import timer_core
from app import log_names as app_names
from timer_core import log_names as library_names

ROOT = Path(app.__file__).parent.parent
PACKAGES = {
    "timer_core": (Path(timer_core.__file__).parent, library_names),
    "app": (Path(app.__file__).parent, app_names),
}


def _logger_names(path: Path) -> Iterator[tuple[int, ast.expr]]:
    """Each ``logging.getLogger(<name>)`` of a module, with its line."""
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "getLogger"
            and node.args
        ):
            yield node.lineno, node.args[0]


def test_every_module_names_its_logger_from_the_table() -> None:
    wrong, used = [], set()
    for root, names in PACKAGES.values():
        constants = {
            name: value
            for name, value in vars(names).items()
            if isinstance(value, str) and value in names.LOGGERS
        }
        for path in sorted(root.rglob("*.py")):
            for line, name in _logger_names(path):
                where = f"{path.relative_to(ROOT)}:{line}"
                if (
                    isinstance(name, ast.Attribute)
                    and isinstance(name.value, ast.Name)
                    and name.value.id == "log_names"
                    and name.attr in constants
                ):
                    used.add(constants[name.attr])
                elif (
                    isinstance(name, ast.Constant)
                    # By its package, not its first letters: "apprise" is another library's.
                    and str(name.value).split(".")[0] not in ("app", "timer_core")
                ) or (isinstance(name, ast.Name) and name.id != "__name__"):
                    continue  # another library's loggers (uvicorn's), configured here
                else:
                    wrong.append(f"{where}: {ast.unparse(name)}")
    assert wrong == [], "name loggers from log_names: " + ", ".join(wrong)
    every = set(library_names.LOGGERS) | set(app_names.LOGGERS)
    assert used == every, f"in a table, used nowhere: {sorted(every - used)}"


def test_each_table_names_only_its_own_package() -> None:
    for package, (_, names) in PACKAGES.items():
        assert all(name.startswith(f"{package}.") for name in names.LOGGERS), names.LOGGERS


def test_the_page_shows_every_name_of_both_tables_and_no_other() -> None:
    page = (ROOT / "docs" / "logging.md").read_text()
    shown = re.findall(r"^\| `([\w.]+)` \|", page, flags=re.MULTILINE)
    assert len(shown) == len(set(shown)), shown
    assert set(shown) == set(library_names.LOGGERS) | set(app_names.LOGGERS)
