"""TLS as a platform team runs it, against a node of the test's own with a TLS listener and a CA
made by the test: the server verified, an unknown CA and a wrong name refused in one sentence at
once, mutual TLS required, EXTERNAL login by certificate, bad files named."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.certs import Authority, require_openssl
from tests.support.rabbit_nodes import RabbitNode, free_port, require_rabbitmq_server
from worker.amqp.connection import connect
from worker.amqp.errors import BrokerRefused
from worker.core.errors import ConfigError
from worker.settings import WorkerSettings


@dataclass(frozen=True)
class TlsBroker:
    node: RabbitNode
    tls_port: int
    ca: Authority
    stranger: Authority  # a CA the node does not know
    client: tuple[Path, Path]  # the client certificate (CN=worker) and its key

    def url(self, host: str = "localhost", user: str = "guest:guest@") -> str:
        return f"amqps://{user}{host}:{self.tls_port}/"

    def settings(self, **overrides: object) -> WorkerSettings:
        values: dict[str, object] = {
            "amqp_url": self.url(),
            "tls_ca_file": str(self.ca.pem),
            "tls_cert_file": str(self.client[0]),
            "tls_key_file": str(self.client[1]),
            "connect_retry_s": 30.0,
            "connect_timeout_s": 5.0,
        }
        values.update(overrides)
        return WorkerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    require_rabbitmq_server()
    require_openssl()
    base = tmp_path_factory.mktemp("tls")
    ca = Authority.create(base / "ca", "test-ca")
    stranger = Authority.create(base / "stranger", "stranger-ca")
    server = ca.issue("localhost", names=("localhost",))
    client = ca.issue("worker")
    tls_port = free_port()
    node = RabbitNode(
        base / "node",
        cookie=uuid.uuid4().hex,
        plugins=("rabbitmq_auth_mechanism_ssl",),
        config=(
            f"listeners.ssl.default = 127.0.0.1:{tls_port}\n"
            f"ssl_options.cacertfile = {ca.pem}\n"
            f"ssl_options.certfile = {server[0]}\n"
            f"ssl_options.keyfile = {server[1]}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
            "auth_mechanisms.1 = PLAIN\n"
            "auth_mechanisms.2 = EXTERNAL\n"
            "ssl_cert_login_from = common_name\n"
        ),
    )
    try:
        node.start()
        # The user EXTERNAL logs in as: the client certificate's CN, no password.
        node.ctl("add_user", "worker", uuid.uuid4().hex)
        node.ctl("clear_password", "worker")
        node.ctl("set_permissions", "-p", "/", "worker", ".*", ".*", ".*")
        yield TlsBroker(node, tls_port, ca, stranger, client)
    finally:
        node.stop()


async def _connects(settings: WorkerSettings, node: RabbitNode | None = None) -> str:
    """Connect and use the connection; what the node lists of its connections meanwhile."""
    connection = await connect(settings, "tls-test")
    try:
        channel = await connection.channel()
        await channel.declare_queue(exclusive=True)
        if node is None:
            return ""
        return await asyncio.to_thread(node.ctl, "list_connections", "user", "auth_mechanism")
    finally:
        await connection.close()


async def _refused_at_once(settings: WorkerSettings) -> str:
    started = time.monotonic()
    with pytest.raises(BrokerRefused) as refused:
        await connect(settings, "tls-test")
    assert time.monotonic() - started < 10  # not connect_retry_s of retries
    message = str(refused.value)
    assert "\n" not in message
    return message


async def test_the_broker_is_verified_against_the_ca(tls_broker: TlsBroker) -> None:
    await _connects(tls_broker.settings())


async def test_an_unknown_ca_is_refused_in_one_sentence(tls_broker: TlsBroker) -> None:
    message = await _refused_at_once(tls_broker.settings(tls_ca_file=str(tls_broker.stranger.pem)))
    assert message.startswith("the certificate of the broker at amqps://guest:***@localhost:")
    assert "is not trusted (" in message
    assert "set tls_ca_file to the CA that signed it" in message


async def test_a_certificate_for_another_name_is_refused(tls_broker: TlsBroker) -> None:
    # The certificate is for localhost; 127.0.0.1 is the same node by another name.
    settings = tls_broker.settings(amqp_url=tls_broker.url(host="127.0.0.1"))
    message = await _refused_at_once(settings)
    assert "is not for the name connected to" in message
    assert "set tls_server_name" in message
    # ...and tls_server_name is how to say which name the certificate must carry.
    await _connects(tls_broker.settings(amqp_url=tls_broker.url(host="127.0.0.1"),
                                        tls_server_name="localhost"))  # fmt: skip


async def test_mutual_tls_refuses_a_client_without_a_certificate(tls_broker: TlsBroker) -> None:
    message = await _refused_at_once(tls_broker.settings(tls_cert_file="", tls_key_file=""))
    assert message.startswith("TLS with the broker at amqps://guest:***@localhost:")
    assert "check the client certificate" in message


async def test_external_auth_logs_in_as_the_certificate(tls_broker: TlsBroker) -> None:
    settings = tls_broker.settings(amqp_url=tls_broker.url(user=""), auth_mechanism="external")
    connections = await _connects(settings, tls_broker.node)
    assert "worker\tEXTERNAL" in connections


def test_files_that_cannot_be_used_are_named(tls_broker: TlsBroker, tmp_path: Path) -> None:
    def refused(**overrides: object) -> str:
        with pytest.raises(ConfigError) as error:
            asyncio.run(connect(tls_broker.settings(**overrides), "tls-test"))
        return str(error.value)

    assert (
        refused(tls_ca_file="/nonexistent/ca.pem")
        == "tls_ca_file /nonexistent/ca.pem: no such file"
    )
    locked = tls_broker.ca.issue("locked", passphrase="secret")
    assert "is protected by a passphrase" in refused(
        tls_cert_file=str(locked[0]), tls_key_file=str(locked[1])
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert "is not a PEM bundle" in refused(tls_ca_file=str(garbage))


async def test_not_verifying_works_and_says_so(
    tls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tls_broker.settings(tls_ca_file=str(tls_broker.stranger.pem), tls_verify=False)
    await _connects(settings)
    [warning] = [r for r in caplog.records if r.name == "worker.amqp.connection"]
    assert warning.levelname == "WARNING"
    assert "tls_verify is false: the broker's certificate is NOT checked" in warning.getMessage()
