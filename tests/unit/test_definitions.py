"""The broker definitions of deploy/: the shipped file is the generated one, and the password
hashes are RabbitMQ's scheme."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import ROOT
from worker.ops.definitions import password_hash

SHIPPED = ROOT / "deploy" / "rabbitmq" / "definitions.json"


def test_the_shipped_definitions_are_the_generated_ones() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "worker.cli", "definitions"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert json.loads(SHIPPED.read_text()) == json.loads(generated), (
        "deploy/rabbitmq/definitions.json is stale: regenerate it with "
        "`self-optimiser definitions -o deploy/rabbitmq/definitions.json`"
    )
    shipped = json.loads(SHIPPED.read_text())
    assert "guest" not in {user["name"] for user in shipped["users"]}
    assert all(user["password_hash"] == "" for user in shipped["users"])  # no secret in git


def test_password_hashes_are_rabbitmqs_sha256_scheme() -> None:
    # The example from RabbitMQ's docs (passwords.md): salt 908D C60A, password "test12".
    assert password_hash("test12", bytes.fromhex("908DC60A")) == (
        "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    )
