"""The durable formats of the worker's state streams, which outlive any one version of it.

``N.results.log`` holds, by AMQP ``type``:

- ``enactment_records``: the records of a group of plans, a JSON array of them, each as it was
  published to ``N.results``;
- ``enactment_record``: one record (version 0.1 wrote one a message, through a binding from
  ``N.results``; still read);
- ``review_flagged``: that an action was flagged for review, and when (headers ``action_id``,
  ``plan_id``, ``flagged_at``, no body), written before the item itself.

``N.checkpoints`` holds ``state-checkpoint`` messages (msgpack): an index of what a run of the
state log held, so that a restart reads the index instead of every record of the window.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

from schemas.codec import decode_record
from schemas.messages import EnactmentRecord

#: A message of the state log that holds the records of a group of plans.
RECORDS_TYPE: Final = "enactment_records"
#: The type of a record published to ``N.results`` (and, in version 0.1, to the state log).
RECORD_TYPE: Final = "enactment_record"
#: The type of the state log's note that an action was flagged for review (and when): the
#: review queue cannot drop a repeat, so the next worker to enact the action must learn from
#: the log when it was flagged, and send that same item again.
FLAGGED_TYPE: Final = "review_flagged"
#: The type and content type of a message of ``N.checkpoints``.
CHECKPOINT_TYPE: Final = "state-checkpoint"
CHECKPOINT_CONTENT_TYPE: Final = "application/msgpack"

_records_json: Final = msgspec.json.Decoder(list[EnactmentRecord])


def records_of(message_type: str | None, body: bytes) -> list[EnactmentRecord]:
    """The records in a message of the state log of this AMQP type: a group's, or the one
    record a message of version 0.1 holds; none in a review note or a marker. Raises
    ``msgspec.DecodeError``."""
    if message_type == RECORDS_TYPE:
        return _records_json.decode(body)
    if message_type in (RECORD_TYPE, None):
        return [decode_record(body)]
    return []  # a marker, a review note


class CheckpointHead(msgspec.Struct, frozen=True, kw_only=True):
    """What a checkpoint covers; read alone, without decoding its index."""

    stream: str  # the state log it summarises
    first: int  # its first offset covered
    last: int  # its last offset covered
    last_id: str  # the message id at ``last`` ("" in all but a write's final message)
    start: bool  # its writer had no checkpoint to go on from: it covers all it knew
    final: bool  # the last message of a write: it carries the guards' records


class Checkpoint(CheckpointHead, frozen=True, kw_only=True):
    """One message of ``N.checkpoints`` (msgpack)."""

    ids: list[str] = []
    offsets: list[int] = []
    times_ms: list[int] = []
    flags: list[tuple[str, datetime]] = []  # (action id, flagged at)
    guard_records: list[bytes] = []  # each record as published (JSON)


_head_decoder: Final = msgspec.msgpack.Decoder(CheckpointHead)
_checkpoint_decoder: Final = msgspec.msgpack.Decoder(Checkpoint)
_checkpoint_encoder: Final = msgspec.msgpack.Encoder()


def decode_checkpoint_head(body: bytes) -> CheckpointHead:
    return _head_decoder.decode(body)


def decode_checkpoint(body: bytes) -> Checkpoint:
    return _checkpoint_decoder.decode(body)


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    return _checkpoint_encoder.encode(checkpoint)
