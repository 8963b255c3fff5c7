"""Checkpoints of the state log: which ones a restart may trust (the chain of heads, what a
write covers, what the reader restores), without a broker."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import aiormq

from schemas.logs import (
    CHECKPOINT_TYPE,
    Checkpoint,
    CheckpointHead,
    decode_checkpoint,
    encode_checkpoint,
)
from worker.amqp.checkpoints import Chain, CheckpointFollower, Offer, write
from worker.amqp.state import FreshIndex

LOG = "N.results.log"


def head(first: int, last: int, *, start: bool = False, final: bool = True) -> CheckpointHead:
    return CheckpointHead(stream=LOG, first=first, last=last, last_id="", start=start, final=final)


def test_a_chain_takes_what_follows_on_and_nothing_after_a_gap() -> None:
    chain = Chain(LOG)
    assert chain.offer(head(10, 20)) is Offer.STARTS
    assert chain.offer(head(21, 30)) is Offer.EXTENDS
    assert chain.offer(head(15, 40)) is Offer.EXTENDS  # overlaps: a second writer
    assert chain.offer(head(20, 35)) is Offer.IGNORED  # covered already
    assert chain.offer(head(50, 60)) is Offer.IGNORED  # a gap: 41..49 is in no checkpoint
    assert chain.covered == 40
    assert chain.offer(head(45, 70, start=True)) is Offer.STARTS  # all its writer knew
    assert (chain.first, chain.covered) == (45, 70)
    other = CheckpointHead(stream="other", first=71, last=80, last_id="", start=False, final=True)
    assert chain.offer(other) is Offer.IGNORED


def test_a_write_goes_on_from_what_is_covered_in_messages_of_bounded_size() -> None:
    entries = [(offset, f"a{offset}", 1000 + offset) for offset in range(0, 100, 3)]
    index = FreshIndex()
    for entry in entries:
        index.append(*entry)
    flagged = datetime(2026, 11, 25, tzinfo=UTC)
    flags = [(31, "a30", flagged)]
    messages = list(write(
        LOG, 20, first_read=0, last=99, last_id="m99", index=index, flags=flags,
        guard_records=[], per_message=10,
    ))  # fmt: skip
    assert [(m.first, m.last, m.start, m.final) for m in messages] == [
        (21, 48, False, False),
        (49, 78, False, False),
        (79, 99, False, True),
    ]
    assert messages[0].ids[0] == "a21"
    assert messages[-1].ids[-1] == "a99"
    assert sum(len(m.ids) for m in messages) == len([e for e in entries if e[0] > 20])
    assert [m.last_id for m in messages] == ["", "", "m99"]
    assert messages[0].flags == [("a30", flagged)]
    assert decode_checkpoint(encode_checkpoint(messages[0])) == messages[0]
    [dump] = write(
        LOG, None, first_read=7, last=99, last_id="m99", index=index, flags=[],
        guard_records=[],
    )  # fmt: skip
    index.forget_through(50)
    assert index.offsets[0] == 51
    assert index.ids[0] == "a51"
    assert (dump.first, dump.start, len(dump.ids)) == (
        7,
        True,
        len([e for e in entries if e[0] >= 7]),
    )


def _reader(*heads: CheckpointHead) -> CheckpointFollower:
    reader = CheckpointFollower("N.checkpoints", Chain(LOG))
    for one in heads:
        body = encode_checkpoint(Checkpoint(**{f: getattr(one, f) for f in one.__struct_fields__}))
        reader.take(_Delivered(body))  # type: ignore[arg-type]
    return reader


class _Delivered:
    """As much of a delivered message as ``take`` reads."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.header = SimpleNamespace(
            properties=aiormq.spec.Basic.Properties(message_type=CHECKPOINT_TYPE)
        )


def test_a_restart_loads_the_chain_up_to_its_last_final_message_if_it_reaches_back() -> None:
    reader = _reader(
        head(5, 10), head(11, 20, final=False), head(21, 30), head(31, 40, final=False)
    )
    chosen = reader.restored(lower=8)
    assert not isinstance(chosen, str)
    bodies, final = chosen
    assert (len(bodies), final.last) == (3, 30)
    assert reader.chain.covered == 30  # the next write goes on from there, not from 40

    late = _reader(head(9, 10), head(11, 20))
    assert "after the window's first" in str(late.restored(lower=8))
    assert late.chain.covered is None  # the next write covers all it knows
    assert "no final" in str(_reader(head(5, 10, final=False)).restored(lower=8))
    assert "no complete" in str(_reader().restored(lower=8))
