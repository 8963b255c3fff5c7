"""The core knows nothing of AMQP: importing it loads no AMQP library.

The optimiser, its guardrails, the effects they key on and the per-plan step are the part that
decides; the AMQP edge (``worker.amqp.service`` and friends) does the I/O around them. Checked in a
fresh interpreter, so that what other tests imported cannot hide an import.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "schemas",
    "worker.core.optimiser",
    "worker.core.guards",
    "worker.core.effects",
    "worker.core.planstep",
    "worker.core.config",
    "worker.core.parameters",
    "worker.core.ports",
    "worker.core.seed",
    "worker.core.metrics",
    "worker.core.text",
]
AMQP = ("aio_pika", "aiormq", "pamqp")


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_amqp_library(module: str) -> None:
    probe = (
        f"import sys, {module}; "
        f"print(','.join(m for m in sys.modules if m.split('.')[0] in {AMQP!r}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"{module} loads {loaded}"


def test_the_probe_sees_an_amqp_import() -> None:
    # The check above must be able to fail: the AMQP edge does load them.
    probe = "import sys, worker.amqp.service; print('aiormq' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
