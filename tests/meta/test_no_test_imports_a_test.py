"""No module of tests/ imports a test module or a conftest.py: what tests share is in
``tests/support/`` (or a room's helper module, such as ``tests/deploy/checks.py``)."""

from __future__ import annotations

import ast

from tests.support.paths import ROOT

MODULES = sorted(p for p in (ROOT / "tests").rglob("*.py") if "js" not in p.parts)


def _a_test(name: str) -> bool:
    """``name`` is a test module or a conftest of ours (from ``tests``, or relative)."""
    parts = name.lstrip(".").split(".")
    ours = name.startswith(".") or parts[0] == "tests"
    return ours and any(p == "conftest" or p.startswith("test_") for p in parts)


def imported_tests(source: str) -> list[str]:
    """The test modules (``test_*``) and conftests that ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _a_test(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            dot = "." if node.module else ""
            names = [module] if _a_test(module) else [module + dot + a.name for a in node.names]
            found += [name for name in names if _a_test(name)]
    return found


def test_no_module_of_the_tests_imports_a_test_module_or_a_conftest() -> None:
    assert len(MODULES) > 50  # the walk found the rooms
    imports = {
        str(path.relative_to(ROOT)): found
        for path in MODULES
        if (found := imported_tests(path.read_text(encoding="utf-8")))
    }
    assert imports == {}


def test_the_check_sees_a_test_module_or_a_conftest_imported() -> None:
    # The check above must be able to fail.
    source = (
        "from tests.integration.test_state import CountingLoad\n"
        "import tests.unit.test_guards\n"
        "from tests.conftest import plan_of\n"
        "from tests.unit import test_plans\n"
        "from . import conftest\n"
        "from tests.support.factories import plan_of\n"
        "import test_helpers_elsewhere\n"
    )
    assert imported_tests(source) == [
        "tests.integration.test_state",
        "tests.unit.test_guards",
        "tests.conftest",
        "tests.unit.test_plans",
        ".conftest",
    ]
