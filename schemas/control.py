"""The kill switch and breaker resets: messages operators publish to exchange ``N.control``.

They land in the stream ``N.control``, which every worker reads from its start at start-up and
then follows, so the last one in the stream is the state, whatever restarts in between. While
paused a worker still consumes plans and records every action as SKIPPED "paused: <reason>".

Versioned: ``version`` is 1; a later version adds fields with defaults.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from schemas.messages import ActionKind, Message, ModuleName, UtcTime

CONTROL_VERSION: Final = 1
Reason = Annotated[str, Meta(max_length=500)]
Operator = Annotated[str, Meta(max_length=200)]


class ControlCommand(enum.StrEnum):
    """What an operator asks of every worker of the namespace."""

    PAUSE = "pause"
    RESUME = "resume"
    #: Close the breaker of (``module``, ``action_kind``); its failures so far are forgiven.
    RESET_BREAKER = "reset_breaker"


class ControlMessage(Message, frozen=True, kw_only=True):
    """One pause, resume or breaker reset: who asked, when and why.

    ``module`` and ``action_kind`` name the breaker a ``reset_breaker`` closes.
    """

    command: ControlCommand
    issued_at: UtcTime
    reason: Reason = ""
    issued_by: Operator = ""
    version: int = CONTROL_VERSION
    module: ModuleName | None = None
    action_kind: ActionKind | None = None
    #: A pause that replaces the one in force (``pause --force``) keeps its start here.
    since: UtcTime | None = None

    @property
    def paused_since(self) -> datetime:
        """When the pause this message states began."""
        return self.since or self.issued_at


_control_json: Final = msgspec.json.Decoder(ControlMessage)


def decode_control(body: bytes) -> ControlMessage:
    """Decode and validate a control message (JSON)."""
    try:
        return _control_json.decode(body)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"a string is not valid UTF-8: {exc.reason}") from None
