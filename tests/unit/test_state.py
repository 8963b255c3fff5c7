"""The state log's messages: records beyond one message's size go in the next, each read back
whole."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from schemas import ActionKind, EnactmentRecord, EnactmentStatus, ImprovementAction, encode
from schemas.logs import records_of
from worker.amqp.state import MESSAGE_BYTES, records_messages


def test_records_beyond_a_message_s_size_go_in_the_next_and_each_reads_back_whole() -> None:
    at = datetime.now(UTC)
    records = [
        EnactmentRecord(
            plan_id="big",
            action=ImprovementAction(
                action_id=f"big-{n}", module_name="m", action_kind=ActionKind.NO_OP,
                rationale="x" * 1000,
            ),
            status=EnactmentStatus.SKIPPED,
            detail="no-op",
            attempted_at=at,
        )
        for n in range(600)
    ]  # fmt: skip
    bodies = [encode(r) for r in records]
    messages = records_messages("N.notes", bodies)
    assert len(messages) == math.ceil(sum(len(b) + 1 for b in bodies) / MESSAGE_BYTES)
    assert all(len(m.body) <= MESSAGE_BYTES for m in messages)
    assert len({m.properties.message_id for m in messages}) == len(messages)
    read = [r for m in messages for r in records_of(m.properties.message_type, m.body)]
    assert read == records
