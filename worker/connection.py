"""Connecting to the broker: retried while it does not answer, refused at once when it says no."""

from __future__ import annotations

import logging

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustConnection
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from worker.config import WorkerSettings
from worker.errors import OptimiserError

log = logging.getLogger(__name__)


class BrokerUnavailable(OptimiserError):
    """The broker did not answer within the start-up retry window."""


class BrokerRefused(OptimiserError):
    """The broker refused us (credentials, vhost, permissions): retrying will not help."""


def _refusal(exc: BaseException, settings: WorkerSettings) -> BrokerRefused | None:
    """A clear error if ``exc`` means the broker refused us for good, else None."""
    url = settings.safe_url
    auth = (aiormq.exceptions.AuthenticationError, aiormq.exceptions.ProbableAuthenticationError)
    if isinstance(exc, auth):
        return BrokerRefused(
            f"the broker at {url} refused the login: check the user name and password ({exc})"
        )
    if isinstance(exc, aiormq.exceptions.ProtocolSyntaxError) and "Connection.Close" in str(exc):
        # RabbitMQ closes the connection during Connection.Open for an unknown vhost or a
        # user without access to it; aiormq reports that as an unexpected frame.
        return BrokerRefused(
            f"the broker at {url} closed the connection while opening it: the vhost may not "
            f"exist, or this user may not use it"
        )
    if isinstance(exc, aiormq.exceptions.IncompatibleProtocolError):
        return BrokerRefused(f"{url} does not speak AMQP 0-9-1 ({exc})")
    return None


async def connect(settings: WorkerSettings, role: str) -> AbstractRobustConnection:
    """A robust connection named ``self-optimiser <namespace> <role>`` (shown in rabbitmqctl).

    Retries with exponential backoff for ``connect_retry_s`` while the broker is unreachable,
    logging each attempt; raises ``BrokerRefused`` at once for a wrong password or vhost and
    ``BrokerUnavailable`` when the window is over.
    """
    name = f"self-optimiser {settings.namespace} {role}"

    def log_attempt(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "cannot reach the broker at %s (attempt %d: %s); retrying in %.1fs",
            settings.safe_url, state.attempt_number, error, wait,
        )  # fmt: skip

    retrying = AsyncRetrying(
        stop=stop_after_delay(settings.connect_retry_s),
        wait=wait_exponential_jitter(multiplier=0.5, max=10.0),
        retry=retry_if_exception(lambda exc: _refusal(exc, settings) is None),
        before_sleep=log_attempt,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await aio_pika.connect_robust(
                    settings.amqp_url,
                    timeout=settings.connect_timeout_s,
                    heartbeat=settings.heartbeat_s,
                    reconnect_interval=1.0,
                    client_properties={"connection_name": name},
                )
    except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
        refused = _refusal(exc, settings)
        if refused is not None:
            raise refused from None
        raise BrokerUnavailable(
            f"no broker answered at {settings.safe_url} within {settings.connect_retry_s:g}s "
            f"({type(exc).__name__}: {exc}): is RabbitMQ running there, and is "
            f"OPTIMISER_AMQP_URL right?"
        ) from None
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
