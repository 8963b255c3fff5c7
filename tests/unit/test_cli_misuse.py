"""Every misuse of the command line: one sentence on stderr, exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.factories import cli_files
from worker.cli import main

BAD: list[list[str]] = [
    [],
    ["frobnicate"],
    ["--nope"],
    ["tail", "--module", "m" * 300],
    ["tail", "--module", "#"],
    ["tail", "--module", ""],
    ["tail", "--module", "a b"],
    ["tail", "--module", "a\x1b[2Jb"],
    ["tail", "--module", "a\nb"],
    ["tail", "--module-pattern", "a..b"],
    ["tail", "--module-pattern", "x" * 200],
    ["tail", "--module", "a", "--module-pattern", "a.*"],
    ["tail", "--kind", "DELETE_EVERYTHING"],
    ["tail", "--status", "success"],
    ["tail", "extra"],
    ["publish"],
    ["publish", "a.json", "b.json"],
    ["publish", "PLAN", "--timeout", "-1"],
    ["publish", "PLAN", "--timeout", "nan"],
    ["publish", "PLAN", "--timeout", "soon"],
    ["publish", "/nonexistent/plan.json"],
    ["publish", "BAD_PLAN"],
    ["publish", "HUGE_PLAN"],
    ["status", "--json", "extra"],
    ["status", "--log-level", "LOUD"],
    ["status", "--config", "/nonexistent.toml"],
    ["pause", "--force", "--force", "extra"],
    ["resume", "now"],
    ["breakers"],
    ["breakers", "reset"],
    ["breakers", "reset", "m"],
    ["breakers", "reset", "m", "DELETE_EVERYTHING"],
    ["review"],
    ["review", "show"],
    ["review", "ack"],
    ["review", "drop", "a-1"],
    ["schema", "nothing"],
    ["schema", "plan", "--namespace", "prod"],
    ["schema", "asyncapi", "--namespace", "no space"],
    ["definitions", "--output"],
    ["demo", "--duration", "-5"],
    ["demo", "--duration", "forever"],
    ["run", "--config", "/nonexistent.toml"],
]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    return cli_files(tmp_path)


@pytest.mark.parametrize("argv", BAD, ids=lambda argv: " ".join(argv)[:50] or "nothing")
def test_a_bad_command_line_is_one_sentence_and_exit_2(
    argv: list[str],
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No broker is reached: each is refused before connecting (an unreachable one would say
    # so, with exit 1, and fail the test).
    monkeypatch.setenv("OPTIMISER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    argv = [files.get(word, word) for word in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse exits itself
        code = exit_.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("self-optimiser"), lines
    assert "error" in lines[0], lines
    assert "Traceback" not in captured.err
    assert "\x1b" not in captured.err  # a control character is shown escaped
