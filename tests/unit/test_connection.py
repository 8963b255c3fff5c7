"""The connection's parts that need no broker: the step of aio-pika's reconnect loop it replaces,
the back-off, and what a connection closed before the handshake is said to be."""

from __future__ import annotations

from aio_pika.robust_connection import RobustConnection

from worker.amqp.connection import _CONNECT_STEP, ClusterConnection, _describe, backoff_s


def test_the_step_it_replaces_is_still_there() -> None:
    # ClusterConnection replaces one name-mangled method of aio-pika's reconnect loop: a
    # release that renames it must fail here, not in production.
    assert callable(getattr(RobustConnection, _CONNECT_STEP))
    assert getattr(ClusterConnection, _CONNECT_STEP) is not getattr(RobustConnection, _CONNECT_STEP)


def test_backoff_doubles_with_jitter_up_to_a_ceiling() -> None:
    assert 0.25 <= backoff_s(1) <= 0.75
    assert 2.0 <= backoff_s(4) <= 6.0
    # A broker back after a long outage is found within seconds (test_faults times it).
    assert all(backoff_s(n) <= 7.5 for n in range(1, 40))


def test_a_connection_closed_before_the_handshake_is_said_in_words() -> None:
    # aiormq raises a bare StopAsyncIteration when a proxy or load balancer accepts the
    # connection and closes it (seen in the alerts run's cut-off): its name told nobody anything.
    assert _describe(StopAsyncIteration()) == "the connection closed before the AMQP handshake"
    assert _describe(ConnectionRefusedError(111, "refused")) == (
        "ConnectionRefusedError: [Errno 111] refused"
    )
