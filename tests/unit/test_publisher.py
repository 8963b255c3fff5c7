"""Publisher.publish_bodies when the channel closes under it or the caller is cancelled: a failed
publish is told from a cancellation, without a broker."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.messages import message
from worker.amqp.errors import PublishFailed
from worker.amqp.publisher import Publisher


async def test_a_cancelled_error_of_the_client_s_is_a_failed_publish_not_a_cancellation() -> None:
    """aiormq fails whoever waits on a closing connection with its reader's CancelledError:
    the publish failed (the caller publishes again); the caller itself was not cancelled."""

    class Closing:
        async def get_underlay_channel(self) -> object:
            raise asyncio.CancelledError  # as aiormq raises it: not the caller's cancellation

    publisher = Publisher(Closing(), timeout_s=5.0)  # type: ignore[arg-type]
    async with asyncio.timeout(1):
        outcomes = await publisher.publish_bodies([message("x", "r", b"a", "m-1")])
    assert isinstance(outcomes[0], PublishFailed)
    assert "closed under it" in str(outcomes[0])


async def test_a_publish_that_is_itself_cancelled_is_cancelled() -> None:
    class Hanging:
        async def get_underlay_channel(self) -> object:
            await asyncio.sleep(60)
            raise AssertionError("unreachable")

    publisher = Publisher(Hanging(), timeout_s=30.0)  # type: ignore[arg-type]
    publishing = asyncio.create_task(publisher.publish_bodies([message("x", "r", b"a", "m-1")]))
    await asyncio.sleep(0.05)
    publishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publishing
