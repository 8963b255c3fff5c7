"""The rooms that decide know nothing of AMQP: importing them loads no AMQP library.

The contract (``schemas``), the core (``worker/core/``) and the settings (``worker/settings.py``)
are found by walking their folders, so a new module is checked the day it is written. Each is
imported in a fresh interpreter, so that what other tests imported cannot hide an import, and
so that an import made lazily at module level is seen too. ``lint-imports`` (``make lint``)
checks the same rule, and the rest of the rooms' rules, on the import graph.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.paths import ROOT

AMQP = ("aio_pika", "aiormq", "pamqp", "tenacity")


def _modules(*places: str) -> list[str]:
    found = []
    for place in places:
        path = ROOT / place
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            parts = file.relative_to(ROOT).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


DECIDING = _modules("schemas", "worker/core", "worker/settings.py")


def _loaded(module: str) -> str:
    probe = (
        f"import sys, {module}; "
        f"print(','.join(m for m in sys.modules if m.split('.')[0] in {AMQP!r}))"
    )
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_walk_finds_the_rooms_modules() -> None:
    assert {"schemas.messages", "worker.core.optimiser", "worker.settings"} <= set(DECIDING)
    assert not [m for m in DECIDING if m.startswith("worker.amqp")]


@pytest.mark.parametrize("module", DECIDING)
def test_a_module_that_decides_imports_no_amqp_library(module: str) -> None:
    loaded = _loaded(module)
    assert loaded == "", f"{module} loads {loaded}"


def test_the_probe_sees_an_amqp_import() -> None:
    # The check above must be able to fail: the worker process does load them.
    assert "aiormq" in _loaded("worker.amqp.worker").split(",")
