"""The contract checks that run in Node.js (``tests/js/``): the tools other teams use.

Their modules are pinned by ``tests/js/package-lock.json`` and installed by ``make js`` (which
``make check`` runs). Without Node.js or the modules a test skips, except in CI (``CI=true``),
where it fails: a check that silently does not run is no check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest

from tests.support.paths import JS_DIR


def missing(environ: Mapping[str, str]) -> str | None:
    """Why the checks cannot run here, or None when they can."""
    if shutil.which("node", path=environ.get("PATH")) is None:
        return "Node.js is not installed"
    dependencies = json.loads((JS_DIR / "package.json").read_text())["dependencies"]
    absent = [name for name in dependencies if not (JS_DIR / "node_modules" / name).is_dir()]
    if absent:
        return f"{', '.join(absent)} not installed in {JS_DIR} (run `make js`)"
    return None


def node_or_skip(environ: Mapping[str, str] = os.environ) -> str:
    """The path of ``node``, once the modules are there; fail in CI without them, else skip."""
    why = missing(environ)
    if why is not None:
        if environ.get("CI") == "true":
            pytest.fail(f"CI needs the Node.js contract checks: {why}", pytrace=False)
        pytest.skip(why)
    node = shutil.which("node", path=environ.get("PATH"))
    assert node is not None
    return node


def run_script(script: str, *arguments: str, stdin: str = "") -> tuple[int, Any]:
    """Run ``tests/js/<script>``; its exit code and the JSON it printed."""
    done = subprocess.run(
        [node_or_skip(), str(JS_DIR / script), *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"{script} exited {done.returncode} without a report:\n{done.stdout}{done.stderr}",
            pytrace=False,
        )
