"""A delivery of aiormq's: whether it is still this worker's, and the one call that acks or
nacks one (the plan handler's settle point for plans, the stream followers' credit acks)."""

from __future__ import annotations

from aiormq.abc import DeliveredMessage


def owned(delivery: DeliveredMessage) -> bool:
    """Whether a delivery is still this worker's: its channel is open, so it can be acked.

    Once the channel is gone the broker gives the plan to another consumer (the standby, or
    this worker after it reconnects), which will enact whatever this one has not.
    """
    return not delivery.channel.is_closed


async def settle(delivery: DeliveredMessage, *, ack: bool, multiple: bool = False) -> None:
    """Ack it (``multiple``: and every delivery before it on its channel), or nack it back to
    its queue. The only call of ``basic_ack`` and ``basic_nack``; raises what the channel
    raises."""
    tag = delivery.delivery_tag
    if tag is None:
        raise RuntimeError("a delivery without a delivery tag cannot be settled")
    if ack:
        await delivery.channel.basic_ack(tag, multiple=multiple)
    else:
        await delivery.channel.basic_nack(tag, requeue=True)
