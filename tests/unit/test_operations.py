"""The commands for the people on call, where no broker is needed: the control message's schema,
and what a broker that does not answer is said to be."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import jsonschema
import pytest

from schemas import encode
from schemas.control import ControlCommand, ControlMessage
from worker.cli import main


def test_schema_control_validates_a_real_control_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema", "control"]) == 0
    schema = json.loads(capsys.readouterr().out)
    message = ControlMessage(command=ControlCommand.PAUSE, reason="r", issued_at=datetime.now(UTC))
    jsonschema.Draft202012Validator(schema).validate(json.loads(encode(message)))


def test_an_unreachable_broker_is_one_sentence_and_exit_1_within_seconds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMISER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    started = time.monotonic()
    assert main(["status"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("self-optimiser: error: no broker answered at amqp://guest:***@")
    assert "is RabbitMQ running there" in err[-1]
    assert time.monotonic() - started < 30  # not the worker's two minutes of retries
