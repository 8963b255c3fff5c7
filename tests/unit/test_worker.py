"""What the worker's commands refuse before they reach a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.cli import main


def test_publish_refuses_an_invalid_plan_before_touching_the_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMISER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    bad = tmp_path / "plan.json"
    bad.write_text('{"plan_id": "p", "actions": [{"action_id": "a", "module_name": "m"}]}')
    assert main(["publish", str(bad)]) == 2
    err = capsys.readouterr().err
    assert (
        "is not a valid plan: Object missing required field `action_kind` - at `$.actions[0]`"
        in err
    )
