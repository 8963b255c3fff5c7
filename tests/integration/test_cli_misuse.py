"""A misuse of the command line that only a broker can tell: a namespace never declared is one
sentence and exit 1."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.factories import cli_files
from worker.cli import main


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    return cli_files(tmp_path)


@pytest.mark.parametrize("command", ["tail", "publish"])
def test_a_namespace_never_declared_is_one_sentence_and_exit_1(
    command: str,
    amqp_url: str,
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPTIMISER_AMQP_URL", amqp_url)
    monkeypatch.setenv("OPTIMISER_NAMESPACE", f"never{uuid.uuid4().hex[:8]}")
    argv = [command] if command == "tail" else [command, files["PLAN"], "--timeout", "5"]
    assert main(argv) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("self-optimiser: error: exchange 'never"), line
    assert "does not exist: start `self-optimiser run` once" in line
