"""The AMQP room's errors, every one an ``OptimiserError``, and the one tuple of what a broker
link throws when it fails under a call.

``BROKER_ERRORS`` is what every call on the broker that must outlive a lost link catches: the
client's own errors (a channel or connection closed, a frame refused), the ``RuntimeError`` of
a closed writer, and socket errors and timeouts (``OSError``). aiormq fails what waits on a
dropped channel with ``CancelledError`` too; ``worker.core.errors.cancelled_here`` tells that
from a cancellation of our own.
"""

from __future__ import annotations

from typing import Final

import aiormq

from worker.core.errors import OptimiserError

BROKER_ERRORS: Final = (aiormq.exceptions.AMQPError, RuntimeError, OSError)


class BrokerUnavailable(OptimiserError):
    """The broker did not answer within the start-up retry window."""


class BrokerRefused(OptimiserError):
    """The broker refused us (credentials, vhost, permissions): retrying will not help."""


class BrokerLost(OptimiserError):
    """The broker went away while a one-shot command was using it."""


class PublishFailed(OptimiserError):
    """The broker did not confirm a message: nacked, timed out, or the channel went away."""


class StreamUnavailable(OptimiserError):
    """A stream could not be read to its end; what it holds is not known."""


class TopologyMismatch(OptimiserError):
    """A queue or exchange exists with other arguments than this version declares."""


class ReviewUndeliverable(OptimiserError):
    """The review queue does not exist: the broker returned the item."""


class BrokenReply(OptimiserError):
    """A subsystem answered with something that is not a valid reply to the command."""
