"""Connecting to the broker: retried while it does not answer, refused at once when it says no.

A cluster is what the worker connects to: ``amqp_url`` may name several nodes. Each connection
attempt is a *round* over all of them, in turn; after a round in which none answered it backs off
(exponentially, with jitter, to a ceiling of a few seconds) and says so in one line, then in one
line a minute while none answers. aio-pika's robust connection reconnects to one URL only, so
``ClusterConnection`` replaces the one step of it that connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final

import aiormq
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)
from yarl import URL

from worker.amqp import frames
from worker.amqp.errors import BROKER_ERRORS, BrokerLost, BrokerRefused, BrokerUnavailable
from worker.core.errors import ConfigError
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


#: The step of aio-pika's reconnect loop that opens the transport (a name-mangled method of
#: RobustConnection; tests/integration/test_connection.py fails if a new aio-pika moves it).
_CONNECT_STEP: Final = "_RobustConnection__connect_transport"
_original_step: Callable[[RobustConnection], Awaitable[None]] = getattr(
    RobustConnection, _CONNECT_STEP
)


#: The backoff's ceiling. Low, because a broker that comes back after a long outage is found
#: no later than this (times 1.5, the jitter) plus aio-pika's reconnect_interval: with 30 s a
#: worker cut off for 7 minutes was ready 32 s after the broker answered again. A few
#: connections a worker trying every few seconds cost a broker nothing.
BACKOFF_MAX_S: Final = 5.0
#: While no broker answers, a line for the first failed round, then one this often.
SAY_EVERY_S: Final = 60.0


def backoff_s(failed_rounds: int, *, first: float = 0.5, most: float = BACKOFF_MAX_S) -> float:
    """Seconds to wait after ``failed_rounds`` rounds in a row failed: doubling, with jitter."""
    return min(most, first * 2.0 ** max(0, failed_rounds - 1)) * random.uniform(0.5, 1.5)


class ClusterConnection(RobustConnection):
    """A robust connection over several broker addresses.

    Every connect (the first, and each reconnect of aio-pika's loop) tries the addresses in
    turn, starting after the one that was lost; when none answers, it backs off before
    aio-pika's loop tries again, and says so for the first such round and then once a minute.
    """

    def __init__(
        self,
        url: URL,
        *,
        addresses: Sequence[URL],
        shown: str,
        rounds_level: int = logging.WARNING,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, **kwargs)
        self._rounds_level = rounds_level
        self._addresses = list(addresses)
        self._index = 0
        self._shown = shown
        self._failed_rounds = 0
        self._failing_since = self._said_at = 0.0
        #: Why the connection last closed (a TLS alert arrives after the handshake, as a close).
        self.closed_by: BaseException | None = None

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # The address in use just went away: the next round starts with the one after it.
        self._index = (self._index + 1) % len(self._addresses)
        if not closing.cancelled() and closing.exception() is not None:
            self.closed_by = closing.exception()
        await super()._on_connection_close(closing)

    async def _round(self) -> None:
        last: BaseException | None = None
        start, count = self._index, len(self._addresses)
        for step in range(count):
            index = (start + step) % count
            self.url = self._addresses[index]
            try:
                await _original_step(self)
            except CONNECTION_EXCEPTIONS as exc:
                if _tls_failure(exc) is not None or isinstance(exc, _AUTH):
                    raise  # the same on every node of a cluster: no use trying the others
                last = exc
                continue
            self._index, self._failed_rounds = index, 0
            return
        assert last is not None
        self._failed_rounds += 1
        if self.connection_attempt:  # reconnecting: the first connect is retried by connect()
            wait = backoff_s(self._failed_rounds)
            self._say(last, wait)
            await asyncio.sleep(wait)
        raise last

    def _say(self, last: BaseException, wait: float) -> None:
        now = time.monotonic()
        if self._failed_rounds == 1:
            self._failing_since = self._said_at = now
            log.log(
                self._rounds_level,
                "no broker answered at %s (%s); trying again in %.1fs",
                self._shown, _describe(last), wait,
            )  # fmt: skip
        elif now - self._said_at >= SAY_EVERY_S:
            self._said_at = now
            log.log(
                self._rounds_level,
                "no broker answered at %s for %.0fs, %d rounds (%s); trying again in %.1fs",
                self._shown, now - self._failing_since, self._failed_rounds, _describe(last), wait,
            )  # fmt: skip


setattr(ClusterConnection, _CONNECT_STEP, ClusterConnection._round)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StopAsyncIteration):  # what aiormq raises for it, with no words
        return "the connection closed before the AMQP handshake"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


_SSL_TEXT: Final = re.compile(
    r"\[SSL: ([A-Z0-9_]+)\]\s*(?:certificate verify failed:\s*)?(.*?)\s*(?:\(_ssl\.c|$)"
)
_AUTH: Final = (
    aiormq.exceptions.AuthenticationError,
    aiormq.exceptions.ProbableAuthenticationError,
)


def _tls_failure(exc: BaseException) -> tuple[bool, str] | None:
    """(certificate verification?, what TLS said) if ``exc`` comes from TLS, else None.

    aiormq wraps the ``ssl`` error in its own, sometimes keeping only its text.
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for each in chain:
        if isinstance(each, ssl.SSLCertVerificationError):
            return True, each.verify_message or str(each)
    for each in chain:
        if isinstance(each, ssl.SSLError):
            return False, each.reason or str(each)
    for each in chain:
        if (found := _SSL_TEXT.search(str(each))) is not None:
            return found.group(1) == "CERTIFICATE_VERIFY_FAILED", found.group(2) or found.group(1)
    return None


def tls_context(settings: WorkerSettings) -> ssl.SSLContext | None:
    """The TLS context for ``amqps://`` brokers (None for plain AMQP), built once at start-up.

    Raises ``ConfigError`` with one sentence for a file that is missing, not PEM, or a key
    with a passphrase (OpenSSL would otherwise ask for it on the terminal).
    """
    if not settings.amqp_urls[0].startswith("amqps://"):
        return None
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
    except FileNotFoundError:
        raise ConfigError(f"tls_ca_file {settings.tls_ca_file}: no such file") from None
    except ssl.SSLError as exc:
        raise ConfigError(
            f"tls_ca_file {settings.tls_ca_file} is not a PEM bundle of CA certificates ({exc})"
        ) from None
    if settings.tls_cert_file:
        try:
            context.load_cert_chain(
                settings.tls_cert_file, settings.tls_key_file, password=_no_passphrase
            )
        except FileNotFoundError as exc:
            raise ConfigError(f"{exc.filename or 'tls_cert_file'}: no such file") from None
        except _Passphrase:
            raise ConfigError(
                f"tls_key_file {settings.tls_key_file} is protected by a passphrase, and the "
                f"worker cannot type one: give it the key without (openssl pkey -in KEY -out NEW)"
            ) from None
        except ssl.SSLError as exc:
            raise ConfigError(
                f"tls_cert_file {settings.tls_cert_file} and tls_key_file "
                f"{settings.tls_key_file} are not a PEM certificate and its key ({exc.reason})"
            ) from None
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning(
            "tls_verify is false: the broker's certificate is NOT checked, so anyone on the "
            "path can pose as the broker; never run like this in production"
        )
    return context


class _Passphrase(Exception):
    pass


def _no_passphrase() -> str:
    raise _Passphrase


def _refusal(exc: BaseException, settings: WorkerSettings) -> BrokerRefused | None:
    """A clear error if ``exc`` means the broker refused us for good, else None."""
    url = settings.safe_url
    tls = _tls_failure(exc)
    if tls is not None and tls[0]:
        why = tls[1]
        if "hostname" in why.lower() or "ip address mismatch" in why.lower():
            return BrokerRefused(
                f"the certificate of the broker at {url} is not for the name connected to "
                f"({why}): connect by a name it carries, or set tls_server_name"
            )
        return BrokerRefused(
            f"the certificate of the broker at {url} is not trusted ({why}): set tls_ca_file "
            f"to the CA that signed it"
        )
    if tls is not None:
        return BrokerRefused(
            f"TLS with the broker at {url} failed ({tls[1]}): check the client certificate "
            f"(tls_cert_file, tls_key_file) and that the broker takes TLS there"
        )
    if isinstance(exc, _AUTH):
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


async def connect(
    settings: WorkerSettings, role: str, *, rounds_level: int = logging.WARNING
) -> AbstractRobustConnection:
    """A robust connection named ``self-optimiser <namespace> <role>`` (shown in rabbitmqctl).

    Retries with exponential backoff for ``connect_retry_s`` while the broker is unreachable,
    logging each attempt; raises ``BrokerRefused`` at once for a wrong password or vhost and
    ``BrokerUnavailable`` when the window is over.
    """
    # Before any frame is read: one byte that is not UTF-8 in a delivery's short strings must
    # not cost the connection (and every plan prefetched on it).
    frames.install()
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
        wait=wait_exponential_jitter(multiplier=0.5, max=BACKOFF_MAX_S),
        retry=retry_if_exception(lambda exc: _refusal(exc, settings) is None),
        before_sleep=log_attempt,
        reraise=True,
    )
    query: dict[str, str | int | float] = {
        "heartbeat": settings.heartbeat_s,
        "reconnect_interval": 1.0,
    }
    if settings.auth_mechanism == "external":
        query["auth"] = "EXTERNAL"
    addresses = [URL(address).update_query(query) for address in settings.amqp_urls]
    context = tls_context(settings)
    try:
        async for attempt in retrying:
            with attempt:
                connection = ClusterConnection(
                    addresses[0],
                    addresses=addresses,
                    shown=settings.safe_url,
                    rounds_level=rounds_level,
                    ssl_context=context,
                    client_properties={"connection_name": name},
                )
                if settings.tls_server_name:  # passed on to asyncio.open_connection
                    connection.kwargs["server_hostname"] = settings.tls_server_name
                try:
                    # Bounded as a whole: a broker that closes right after the transport is up
                    # (a TLS alert, say) sends aio-pika's robust connection round for ever.
                    async with asyncio.timeout(settings.connect_timeout_s * 2):
                        await connection.connect(timeout=settings.connect_timeout_s)
                except TimeoutError:
                    with contextlib.suppress(Exception):
                        await connection.close()
                    raise connection.closed_by or TimeoutError() from None
                return connection
    except BROKER_ERRORS as exc:
        refused = _refusal(exc, settings)
        if refused is not None:
            raise refused from None
        raise BrokerUnavailable(
            f"no broker answered at {settings.safe_url} within {settings.connect_retry_s:g}s "
            f"({type(exc).__name__}: {exc}): is RabbitMQ running there, and is "
            f"OPTIMISER_AMQP_URL right?"
        ) from None
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover


@contextlib.asynccontextmanager
async def one_shot(settings: WorkerSettings, role: str) -> AsyncIterator[AbstractRobustConnection]:
    """A connection for a command that does one thing and exits (``status``, ``publish``).

    If the broker goes away while the command uses it, the command stops at once with
    ``BrokerLost`` (one sentence for the person who ran it) instead of waiting for a reconnect
    behind the libraries' chatter.
    """
    connection = await connect(settings, role)
    task = asyncio.current_task()
    lost: list[BaseException] = []

    def on_close(_sender: object, exc: BaseException | None = None) -> None:
        if not lost:
            lost.append(exc or ConnectionError("connection closed"))
            if task is not None:
                task.cancel()

    connection.close_callbacks.add(on_close)
    try:
        yield connection
    except BaseException as exc:
        if not lost:
            raise
        if isinstance(exc, asyncio.CancelledError) and task is not None:
            task.uncancel()
        raise BrokerLost(f"lost the broker at {settings.safe_url} ({_describe(lost[0])})") from None
    finally:
        with contextlib.suppress(RuntimeError):  # frozen while aio-pika closes it
            connection.close_callbacks.discard(on_close)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(settings.connect_timeout_s):
                await connection.close()
